"""Outcomes: what the consumer core decides for each delivery, and every runtime applies.

=============== ==================================================== ===========================
outcome         meaning                                              worker applies it as
=============== ==================================================== ===========================
``Completed``   the handler returned                                 delete (batched)
``Retry``       a retryable failure; try again after ``delay``       visibility = delay
``DeadLetter``  can never succeed, or out of attempts                send to DLQ with reason, delete
``Deferred``    not run now, and not an attempt                      visibility = delay (or re-send)
``Released``    never started (shutdown, FIFO group blocked)         visibility = 0
``Cancelled``   cancelled before it ran                              delete
=============== ==================================================== ===========================
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE
from cloudjobs.reasons import Reason as Reason

MAX_TRACEBACK_CHARS: Final = 4000
"""The longest traceback a dead letter records (its last characters)."""


@dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned ``result``."""

    result: object = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Run again after ``delay``; ``error`` says why this attempt failed."""

    delay: timedelta
    error: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Send to the dead-letter queue with ``reason`` (machine-readable) and ``error`` (human).

    ``job_id`` and ``traceback`` (the failing attempt's, its last lines) are recorded when known;
    they do not take part in comparisons.
    """

    reason: str
    error: str
    attempt: int
    job_type: str | None = None
    job_id: str | None = field(default=None, compare=False)
    traceback: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not run now and not counted as an attempt; back after ``delay``.

    ``requeue``: when set, the runtime sends this copy (same job, ``delay`` capped at 900 s) and
    deletes the delivery instead of changing its visibility, because the delivery's receive count is
    near the queue's redrive threshold. If the send fails, it falls back to the visibility change.
    """

    delay: timedelta
    reason: str
    requeue: OutgoingMessage | None = None


@dataclass(frozen=True, slots=True)
class Released:
    """Never started; visible again at once."""

    reason: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    """Cancelled before it ran; acknowledged without running."""


Outcome = Completed | Retry | DeadLetter | Deferred | Released | Cancelled
"""Every outcome the consumer core can decide."""


def dead_letter_attributes(outcome: DeadLetter, *, failed_at: datetime) -> dict[str, str]:
    """The message attribute recording why a message was dead-lettered (one JSON attribute)."""
    details: dict[str, object] = {
        "reason": outcome.reason,
        "error": outcome.error[:2000],
        "attempts": outcome.attempt,
        "job_type": outcome.job_type,
        "failed_at": failed_at.isoformat(),
    }
    if outcome.traceback:
        # The last lines say where it failed; the first ones only how the worker called it.
        details["traceback"] = outcome.traceback[-MAX_TRACEBACK_CHARS:]
    # ASCII: escaped, so no character SQS refuses (U+FFFF...) can come in with a job type or an error.
    return {DEAD_LETTER_ATTRIBUTE: json.dumps(details, separators=(",", ":"))}
