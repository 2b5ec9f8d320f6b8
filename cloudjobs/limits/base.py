"""The limiter protocol, its answers, and the rate arithmetic both limiters share.

**Rate** (GCRA, the generic cell rate algorithm): a key's state is one time, its *theoretical
arrival time* ``tat``: when the budget spent so far is paid back at the rate. A start at ``now`` is
allowed when ``tat <= now + tolerance`` and moves ``tat`` to ``max(tat, now) + interval``; a refused
start may try again at ``tat - tolerance``. With ``interval = period / count`` and
``tolerance = (burst - 1) * interval``, at most ``burst`` start at once after a quiet spell and
``count`` per period on average. It is a token bucket of ``burst`` tokens refilled one per
``interval``, kept as one number.

**Concurrency**: a key's holders, each a lease (a token and when it ends). A slot is taken while fewer
than ``limit`` leases are live; a lease lapses ``clock_skew`` after its end unless renewed, so a
killed worker's slot comes back by itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from cloudjobs.limits.spec import RateLimit

DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=2)
"""How long after its end a concurrency lease counts as lapsed (clocks of two machines apart)."""

MAX_KEY_LENGTH: Final = 512
"""Limit keys longer than this are counted under their SHA-256 (a DynamoDB key holds 2,048 bytes)."""


@dataclass(frozen=True, slots=True)
class Granted:
    """A rate limit's start was taken."""


@dataclass(frozen=True, slots=True)
class RateExceeded:
    """No start is left now; ``retry_at`` is when one will be (by the limiter's clock)."""

    retry_at: datetime


@dataclass(frozen=True, slots=True)
class Slot:
    """A concurrency slot held under ``token`` until ``expires_at`` unless renewed."""

    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SlotsFull:
    """Every slot is held; ``lapses_at`` is when the earliest lease lapses unless renewed (a slot is
    usually freed sooner, when its job ends)."""

    lapses_at: datetime


RateAnswer = Granted | RateExceeded
"""What :meth:`Limiter.take` answers."""
SlotAnswer = Slot | SlotsFull
"""What :meth:`Limiter.acquire` answers."""


class Limiter(Protocol):
    """Where limits are counted. Keys are the ones :func:`rate_key` and :func:`concurrency_key` build.

    Every method raises :class:`~cloudjobs.errors.IdempotencyStoreError` when its store cannot be
    reached (limits live in the idempotency table); the consumer then fails closed.
    """

    def take(self, key: str, rate: RateLimit) -> RateAnswer:
        """Take one start from ``key``'s rate budget, or say when one will be left."""
        ...

    def acquire(self, key: str, limit: int, *, lease: timedelta) -> SlotAnswer:
        """Take one of ``key``'s ``limit`` slots for ``lease``, or say that all are held."""
        ...

    def renew(self, key: str, token: str, *, lease: timedelta) -> bool:
        """Extend a held slot's lease to ``lease`` from now; False when it lapsed and was lost."""
        ...

    def release(self, key: str, token: str) -> None:
        """Give a slot back (nothing happens when it is no longer held)."""
        ...


def gcra(tat: float | None, now: float, rate: RateLimit) -> tuple[float, float | None]:
    """One GCRA decision in epoch seconds: ``(new tat, None)`` when allowed, else
    ``(tat, retry_at)``. ``tat`` None is a key never used (or forgotten)."""
    interval = rate.interval.total_seconds()
    tolerance = rate.tolerance.total_seconds()
    if tat is not None and tat > now + tolerance:
        return tat, tat - tolerance
    return max(tat if tat is not None else now, now) + interval, None


def rate_key(job_type: str, key: str | None) -> str:
    """The item key of a job type's rate budget (per limit key when it has one)."""
    return _item_key("rate", job_type, key)


def concurrency_key(job_type: str, key: str | None) -> str:
    """The item key of a job type's concurrency slots (per limit key when it has one)."""
    return _item_key("concurrency", job_type, key)


def _item_key(kind: str, job_type: str, key: str | None) -> str:
    base = f"#limit#{kind}#{job_type}"
    if key is None:
        return base
    if len(key) > MAX_KEY_LENGTH:
        key = "sha256-" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{base}#{key}"
