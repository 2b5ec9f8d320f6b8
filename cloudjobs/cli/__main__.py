"""``python -m cloudjobs.cli``: the same as the ``cloudjobs`` script."""

from __future__ import annotations

import sys

from cloudjobs.cli.main import main

sys.exit(main())
