"""``python -m benchmark``: see benchmark.cli."""

import sys

from benchmark.cli import main

sys.exit(main())
