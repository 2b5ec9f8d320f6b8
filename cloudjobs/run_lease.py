"""A lease length for the runs in a block, set by a runtime that knows when its runs must end.

On Lambda no run outlives its invocation, so an idempotency lease taken there lasts the invocation's
remaining time plus a margin, not the queue's visibility timeout (which is at least six function
timeouts): a duplicate delivered after a crashed invocation waits only as long as that invocation
could have run. The Lambda runtime sets the bound around each record; the idempotency middleware
reads it when it takes a lease. Kept apart from the middleware so the Lambda import path stays lean.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from datetime import timedelta
from typing import Final

LEASE_MARGIN: Final = timedelta(seconds=5)
"""Added to the remaining time: the completion write after the handler, and clock drift."""

_bound: contextvars.ContextVar[timedelta | None] = contextvars.ContextVar("cloudjobs_run_lease", default=None)


@contextlib.contextmanager
def runs_end_within(remaining: timedelta) -> Iterator[None]:
    """Within the block (this thread or task), leases last ``remaining`` plus :data:`LEASE_MARGIN`."""
    token = _bound.set(max(remaining, timedelta(0)) + LEASE_MARGIN)
    try:
        yield
    finally:
        _bound.reset(token)


def lease_bound() -> timedelta | None:
    """The lease the enclosing :func:`runs_end_within` sets, or None outside one."""
    return _bound.get()
