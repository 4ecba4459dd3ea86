"""``python -m mutualnet ...`` (and ``torchrun ... -m mutualnet train ...``) run the command line."""

import sys

from .cli import main

sys.exit(main())
