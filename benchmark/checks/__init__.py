"""Checks that train small models through the harness: ``regress`` (the golden variance
numbers), ``tiny_runs`` (tiny world runs shared by tests and docs), ``scale_check`` (step time
and peak memory at real model size, ``python -m benchmark.checks.scale_check``)."""
