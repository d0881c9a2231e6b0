"""`python -m microqwen` runs the command line, like the `microqwen` script."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
