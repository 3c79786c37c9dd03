"""``python -m edgeformer.cli``: the ``edgeformer`` command."""

import sys

from edgeformer.cli import main

sys.exit(main())
