"""``python -m nnslicer.cli``: the ``nnslicer`` command."""

import sys

from . import main

sys.exit(main())
