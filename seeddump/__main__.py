"""``python -m seeddump restore ENV [options]``: see ``seeddump.cli``."""

import sys

from seeddump.cli import main

sys.exit(main())
