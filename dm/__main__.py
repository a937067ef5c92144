"""`python -m dm`: see dm/cli.py."""

import sys

from dm.cli import main

sys.exit(main())
