"""`python -m seriatim`: the `seriatim` command, as the process tree starts its children."""

import sys

from seriatim.cli import main

sys.exit(main())
