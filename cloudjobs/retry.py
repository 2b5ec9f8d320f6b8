"""RetryPolicy: how many attempts a job gets and how long it waits between them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from cloudjobs.backends.base import MAX_VISIBILITY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped.

    The wait before attempt ``n + 1`` is drawn uniformly from the whole seconds 1 to
    ``min(cap, base * 2 ** (n - 1))`` ("full jitter", at least a second), which spreads retries of
    many failing jobs instead of bunching them.

    Attributes:
        max_attempts: attempts in all, the first included; the last failure goes to the DLQ.
        base: the ceiling of the first backoff.
        cap: the largest backoff (SQS cannot hide a message longer than 12 hours).
        random: a source of floats in ``[0, 1)``; injectable for tests.
    """

    max_attempts: int = 5
    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(seconds=900)
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")
        if self.cap > MAX_VISIBILITY:
            raise ValueError("backoff cap cannot exceed SQS's 12-hour visibility limit")

    def ceiling(self, attempt: int) -> timedelta:
        """The largest backoff after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        seconds = min(self.cap.total_seconds(), self.base.total_seconds() * (2**exponent))
        return timedelta(seconds=seconds)

    def backoff(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt``: whole seconds, uniform from 1 to the ceiling.

        SQS visibility takes whole seconds. The draw is ``1 + floor(r * c)`` for ``r`` in ``[0, 1)``
        and ``c`` the ceiling rounded up to whole seconds: each of ``1 .. c`` equally likely, never 0
        (a retry that waits nothing hammers whatever just failed) and never past the ceiling.
        """
        ceiling = math.ceil(self.ceiling(attempt).total_seconds())
        return timedelta(seconds=min(ceiling, 1 + int(ceiling * self.random())))

    def is_exhausted(self, attempt: int) -> bool:
        """True when attempt ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts
