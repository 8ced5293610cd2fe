"""``python -m search``: the same commands as ``capsearch``."""

import sys

from search.cli import main

sys.exit(main())
