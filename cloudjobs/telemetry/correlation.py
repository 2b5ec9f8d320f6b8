"""The correlation id: what ties together every job started by one request.

The envelope carries it (the source of truth); it is mirrored in the ``cloudjobs.correlation_id``
attribute and in baggage under :data:`CORRELATION_BAGGAGE_KEY` (see
:mod:`cloudjobs.telemetry.propagation`). Reading it needs OpenTelemetry only when the process has
loaded its baggage API: without it no request's baggage can be current.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Final

from cloudjobs.ids import random_hex
from cloudjobs.job import current_job
from cloudjobs.telemetry.providers import loaded

CORRELATION_BAGGAGE_KEY: Final = "cloudjobs.correlation_id"
"""The baggage entry that mirrors the correlation id (also read from an incoming request's baggage)."""

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cloudjobs_correlation_id", default=None
)


def current_correlation_id() -> str | None:
    """The correlation id in force here: the one set by :func:`correlation_scope` (a running job
    sets its own), else the running job's, else an incoming request's baggage entry, else None."""
    explicit = _correlation_id.get()
    if explicit is not None:
        return explicit
    job = current_job()
    if job is not None:
        return job.correlation_id
    baggage = loaded("opentelemetry.baggage")
    if baggage is None:
        return None  # no baggage API loaded: no baggage is current
    value = baggage.get_baggage(CORRELATION_BAGGAGE_KEY)
    return value if isinstance(value, str) and value else None


@contextlib.contextmanager
def correlation_scope(correlation_id: str) -> Iterator[str]:
    """Make ``correlation_id`` the current one for the ``with`` block (e.g. a web request's own id).

    Jobs enqueued inside the block carry it; log records get it through the log filter.
    """
    token = _correlation_id.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _correlation_id.reset(token)


def set_correlation_id(correlation_id: str | None) -> contextvars.Token[str | None]:
    """Set the current correlation id; returns the token for :func:`reset_correlation_id`."""
    return _correlation_id.set(correlation_id)


def reset_correlation_id(token: contextvars.Token[str | None]) -> None:
    """Restore the correlation id in force before :func:`set_correlation_id`."""
    _correlation_id.reset(token)


def correlation_id_for_enqueue() -> str:
    """The correlation id of a job enqueued here: the current one, or a new one (32 hex digits)."""
    return current_correlation_id() or random_hex()
