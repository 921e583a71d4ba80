"""``python -m tuneavideo``: see :mod:`tuneavideo.cli`."""

import sys

from .cli import main

sys.exit(main())
