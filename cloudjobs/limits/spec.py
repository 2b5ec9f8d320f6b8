"""Limit specifications: what ``@jobs.job(rate_limit=..., concurrency_limit=..., limit_key=...)``
registers, checked when the job is registered.

A rate is ``"<count>/<period>"``: a count of job starts and a period of ``s``, ``m``, ``h`` or
``d`` (also ``sec``, ``second``, ``min``, ``minute``, ``hour``, ``day`` and their plurals), optionally
with a number of units before it (``"5/10s"``). A :class:`RateLimit` may be given instead, to choose
the burst.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from pydantic import BaseModel

from cloudjobs.errors import InvalidLimitError

LimitKey = Callable[[Any], object] | str
"""How ``@jobs.job(limit_key=...)`` derives the key a limit is counted under: a payload field's name,
or a function of the validated payload."""

MAX_CONCURRENCY_LIMIT: Final = 1000
"""The largest ``concurrency_limit``: the leases of one key share one DynamoDB item (400 KB)."""

_UNITS: Final = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_UNITS.update({f"{unit}s": seconds for unit, seconds in list(_UNITS.items()) if len(unit) > 1})
_RATE: Final = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` job starts per ``period`` on average, in bursts of up to ``burst``.

    A token bucket of ``burst`` tokens, refilled one every ``period / count`` (kept as GCRA's one
    number, see :mod:`cloudjobs.limits.base`): after a quiet spell up to ``burst`` start at once,
    then one per ``period / count``. In any window of length ``w`` at most
    ``burst + count * w / period`` start (so ``2 * count`` in a period at worst with the default
    burst; ``burst=1`` spaces every start and allows ``count + 1``).

    Attributes:
        count: job starts per period (at least 1).
        period: the period (positive).
        burst: starts allowed at once after a quiet spell (at least 1; None: ``count``, a full
            period's budget).

    Raises:
        InvalidLimitError: a value out of range.
    """

    count: int
    period: timedelta
    burst: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidLimitError(f"a rate limit allows at least 1 start per period, not {self.count!r}")
        if not isinstance(self.period, timedelta) or self.period <= timedelta(0):
            raise InvalidLimitError(
                f"a rate limit's period must be a positive timedelta, not {self.period!r}"
            )
        burst = self.burst
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
            raise InvalidLimitError(f"a rate limit's burst is at least 1, not {burst!r}")

    @property
    def bucket(self) -> int:
        """The burst in force: ``burst``, else ``count``."""
        return self.burst if self.burst is not None else self.count

    @property
    def interval(self) -> timedelta:
        """The time one start takes from the budget: ``period / count``."""
        return self.period / self.count

    @property
    def tolerance(self) -> timedelta:
        """How far ahead of now the budget may be spent: ``(bucket - 1) * interval``."""
        return self.interval * (self.bucket - 1)

    def __str__(self) -> str:
        return f"{self.count}/{self.period.total_seconds():g}s, burst {self.bucket}"


def parse_rate(spec: str | RateLimit) -> RateLimit:
    """A :class:`RateLimit` from ``"100/m"``, ``"20/s"``, ``"5/10s"``... (or the limit itself).

    Raises:
        InvalidLimitError: the text is not ``<count>/<period>`` with a known unit, or the count is 0.
    """
    if isinstance(spec, RateLimit):
        return spec
    if not isinstance(spec, str):
        raise InvalidLimitError(f"rate_limit takes a text like '100/m' or a RateLimit, not {spec!r}")
    match = _RATE.fullmatch(spec.lower())
    unit = _UNITS.get(match.group(3)) if match else None
    if match is None or unit is None:
        raise InvalidLimitError(
            f"rate_limit {spec!r} is not '<count>/<period>' with a period of s, m, h or d (e.g. '100/m')"
        )
    multiple = int(match.group(2)) if match.group(2) else 1
    if multiple < 1:
        raise InvalidLimitError(f"rate_limit {spec!r}: the period must be positive")
    return RateLimit(count=int(match.group(1)), period=timedelta(seconds=unit * multiple))


@dataclass(frozen=True, slots=True)
class JobLimits:
    """The limits of one job type.

    Attributes:
        rate: the rate limit (None: none).
        concurrency: at most this many runs at once (None: no limit).
        key_of: derives the key the limits are counted under from the validated payload (None: one
            count for the whole job type).
    """

    rate: RateLimit | None = None
    concurrency: int | None = None
    key_of: Callable[[Any], str | None] | None = None

    def key(self, payload: Any) -> str | None:
        """The key of a validated payload (None: the job type's own count).

        Raises:
            Exception: whatever a ``limit_key`` function raises.
        """
        return None if self.key_of is None else self.key_of(payload)


def job_limits(
    name: str,
    *,
    rate_limit: str | RateLimit | None,
    concurrency_limit: int | None,
    limit_key: LimitKey | None,
) -> JobLimits | None:
    """Parse a registration's limits (None when it has none).

    Raises:
        InvalidLimitError: a malformed rate, a concurrency limit below 1 (or above
            :data:`MAX_CONCURRENCY_LIMIT`), or a ``limit_key`` that is neither a field name nor a
            function, or given without a limit.
    """
    try:
        rate = parse_rate(rate_limit) if rate_limit is not None else None
    except InvalidLimitError as exc:
        raise InvalidLimitError(str(exc), job_name=name, setting="rate_limit") from None
    if concurrency_limit is not None and (
        isinstance(concurrency_limit, bool)
        or not isinstance(concurrency_limit, int)
        or not 1 <= concurrency_limit <= MAX_CONCURRENCY_LIMIT
    ):
        raise InvalidLimitError(
            f"concurrency_limit must be a whole number from 1 to {MAX_CONCURRENCY_LIMIT}, not "
            f"{concurrency_limit!r}",
            job_name=name,
            setting="concurrency_limit",
        )
    if rate is None and concurrency_limit is None:
        if limit_key is not None:
            raise InvalidLimitError(
                "limit_key needs a rate_limit or a concurrency_limit", job_name=name, setting="limit_key"
            )
        return None
    return JobLimits(rate=rate, concurrency=concurrency_limit, key_of=_key_function(name, limit_key))


def check_key_field(name: str, payload_type: Any, limit_key: LimitKey | None) -> None:
    """Refuse a ``limit_key`` field name the payload's model does not have.

    Only a pydantic model or a dataclass names its fields; any other payload type is not checked.

    Raises:
        InvalidLimitError: the model has no such field.
    """
    if not isinstance(limit_key, str):
        return
    fields: set[str] | None = None
    if isinstance(payload_type, type) and issubclass(payload_type, BaseModel):
        fields = set(payload_type.model_fields)
    elif isinstance(payload_type, type) and dataclasses.is_dataclass(payload_type):
        fields = {field.name for field in dataclasses.fields(payload_type)}
    if fields is not None and limit_key not in fields:
        raise InvalidLimitError(
            f"limit_key {limit_key!r} is not a field of {payload_type.__qualname__} "
            f"(fields: {', '.join(sorted(fields)) or 'none'})",
            job_name=name,
            setting="limit_key",
        )


def _key_function(name: str, key: LimitKey | None) -> Callable[[Any], str | None] | None:
    if key is None:
        return None
    if callable(key):
        function = key

        def from_function(payload: Any) -> str | None:
            value = function(payload)
            return None if value is None else str(value)

        return from_function
    if not isinstance(key, str) or not key:
        raise InvalidLimitError(
            "limit_key takes a payload field's name or a function of the payload",
            job_name=name,
            setting="limit_key",
        )
    field = key

    def from_field(payload: Any) -> str | None:
        value = payload.get(field) if isinstance(payload, dict) else getattr(payload, field, None)
        return None if value is None else str(value)

    return from_field
