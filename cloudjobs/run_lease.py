"""How long a run's leases last where a runtime knows when its runs must end.

On Lambda no run outlives its invocation, so an idempotency lease taken there lasts the invocation's
remaining time plus a margin, not the queue's visibility timeout (which is at least six function
timeouts): a duplicate delivered after a crashed invocation waits only as long as that invocation
could have run. The Lambda runtime tells each run its time left (``Invocation.time_left``); the
idempotency middleware reads :func:`lease_limit` of it from the run (``Run.lease_limit``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

LEASE_MARGIN: Final = timedelta(seconds=5)
"""Added to the remaining time: the completion write after the handler, and clock drift."""


def lease_limit(remaining: timedelta) -> timedelta:
    """The lease for a run that must end within ``remaining``: that plus :data:`LEASE_MARGIN`."""
    return max(remaining, timedelta(0)) + LEASE_MARGIN
