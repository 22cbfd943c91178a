"""The results schema: what the writer (``benchmark``) and the reader (``analysis``) share.

``schema``: long-format columns, prompt slug, cell names and ids, snapshot file names,
``is_machine_metric``; ``catalogue``: every metric's title, kind, better direction and whether
the summary shows it; ``atomic``: the one atomic write; ``provenance``: versions and git commit.
Imports nothing of the project but ``core`` (tests/test_layering.py).
"""
