"""The command line's exit codes (documented in ``cloudjobs --help`` and docs/operations.md)."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
"""The command did what was asked (and ``stats`` found the queue healthy)."""
EXIT_FAILED: Final = 1
"""An operation failed (the queue service refused or could not be reached, a redrive left messages
behind, the demo did not settle) or ``stats`` found the queue unhealthy."""
EXIT_USAGE: Final = 2
"""A usage or configuration error: bad arguments or input, missing settings or credentials."""
