"""``python -m benchmark``: see benchmark.cli.commands."""

import sys

from benchmark.cli.commands import main

sys.exit(main())
