"""``python -m nnjax``: the ``nnjax`` command (``nnjax.cli``)."""

import sys

from nnjax.cli import main

sys.exit(main())
