"""The ``cloudjobs`` command line, on click: one module per command (group).

Nothing in the library or the Lambda path imports this package.
"""

from __future__ import annotations

from cloudjobs.cli.main import main

__all__ = ["main"]
