"""``python -m bench`` is the ``convbench`` command."""

import sys

from bench.cli import main

sys.exit(main())
