"""What a dead-letter listing shows, and how it is read from a DLQ message.

The consumer records why it dead-lettered a message in the ``cloudjobs.dead_letter`` attribute
(reason, error, attempts, job type, time). Messages SQS's own redrive moved (maxReceiveCount) carry
no such record, and foreign bodies are no envelope: they are listed all the same, with what is
known left as None.

Failure times, from what is recorded:

- ``last_failed_at``: when the consumer last dead-lettered the job (``failed_at`` of the record);
  None when there is no record.
- ``first_failed_at``: when the job first reached the dead-letter queue. A redrive carries that
  time along in the ``cloudjobs.first_failed_at`` attribute, so it survives later dead-letterings;
  for a job never redriven it equals ``last_failed_at``. Earlier failed *attempts* (retries before
  the last one) are not recorded anywhere.

"Failed" in a job's times means dead-lettered, as in a job's state (``JobState.FAILED``);
:attr:`RedriveReport.failed` counts something else: messages a redrive could not move.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Final

from cloudjobs.backends.base import Delivery
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE, ID_ATTRIBUTE, TYPE_ATTRIBUTE, Envelope, decode
from cloudjobs.errors import DecodeError

FIRST_FAILED_ATTRIBUTE: Final = "cloudjobs.first_failed_at"
"""Set on a redriven message: when its job first reached the dead-letter queue (ISO 8601, UTC)."""


@dataclass(frozen=True, slots=True)
class DeadJob:
    """One message in the dead-letter queue, as ``jobs.dlq.list()`` shows it.

    Attributes:
        job_id: the envelope's job id (kept across redrives); None for a foreign body.
        type: the job type, from the envelope or the dead-letter record; None when unknown.
        reason: why the consumer dead-lettered it (``permanent_error``, ``invalid_payload``,
            ``unroutable``, ``max_attempts``...); None when nothing was recorded (moved by SQS's own
            redrive after maxReceiveCount, or sent by another tool).
        error: the error message the consumer recorded.
        attempts: the attempts the job had made when it was dead-lettered.
        first_failed_at: when the job first reached the dead-letter queue (see the module notes).
        last_failed_at: when it was last dead-lettered; what ``purge(older_than=...)`` compares.
        message_id: the DLQ message's id.
        body: the message body, as it is.
        redrive_count: how many times the job was redriven before (from the envelope).
        traceback: the failing attempt's traceback (its last lines), when one was recorded.
    """

    job_id: str | None
    type: str | None
    reason: str | None
    error: str | None
    attempts: int | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    message_id: str
    body: str
    redrive_count: int = 0
    traceback: str | None = None


class RedriveStop(Enum):
    """Why a redrive ended (:attr:`RedriveReport.stop`)."""

    DRAINED = "drained"
    """The dead-letter queue had nothing more to read, or the move task completed."""
    MET_OWN_MESSAGES = "met_own_messages"
    """It met copies it had sent back itself, after reading as many messages as the dead-letter
    queue held at the start: what is left came after the start (its own copies among them)."""
    MOVED_START_COUNT = "moved_start_count"
    """The move task was cancelled once it had moved the count SQS read when it started."""
    MOVE_TASK_STOPPED = "move_task_stopped"
    """The move task failed, or someone else cancelled it; ``errors`` says which."""


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """What a redrive did (or, on a dry run, would do).

    Attributes:
        moved: messages sent back to the source queue and deleted from the DLQ (on a dry run:
            messages that match and would move).
        skipped: messages seen that did not match the filters; released, untouched.
        failed: messages that matched but stay in the DLQ (the send or the delete failed; after a
            failed delete the job is in both queues), or that a move task did not move.
        dry_run: nothing was changed.
        jobs: the jobs moved (or that would move), in the order handled; empty after a move task,
            which reports only counts.
        errors: one line per failure.
        returned: copies this redrive had sent back that reached the DLQ again while it ran (the job
            failed again); left in the DLQ, never moved twice by one redrive. Always 0 after a move
            task, which cannot tell them apart.
        stop: why the redrive ended.
    """

    moved: int
    skipped: int
    failed: int
    dry_run: bool = False
    jobs: tuple[DeadJob, ...] = ()
    errors: tuple[str, ...] = field(default=())
    returned: int = 0
    stop: RedriveStop = RedriveStop.DRAINED

    @property
    def is_complete(self) -> bool:
        """True when nothing that matched was left behind."""
        return self.failed == 0 and not self.errors


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a long redrive is, for a progress bar (``on_progress``).

    Attributes:
        done: messages handled so far (moved, skipped or failed).
        total: the approximate number to handle (the DLQ's depth when it started), when known.
    """

    done: int
    total: int | None


def read_dead_job(delivery: Delivery) -> DeadJob:
    """Describe a DLQ message; never raises, whatever its body and attributes hold."""
    record = _dead_letter_record(delivery)
    envelope = decode_or_none(delivery.body)
    last_failed_at = _time(record.get("failed_at"))
    first_failed_at = _time(delivery.attributes.get(FIRST_FAILED_ATTRIBUTE)) or last_failed_at
    attempts = record.get("attempts")
    return DeadJob(
        job_id=envelope.id if envelope else delivery.attributes.get(ID_ATTRIBUTE),
        type=(envelope.type if envelope else None)
        or _text(record.get("job_type"))
        or delivery.attributes.get(TYPE_ATTRIBUTE),
        reason=_text(record.get("reason")),
        error=_text(record.get("error")),
        attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None,
        first_failed_at=first_failed_at,
        last_failed_at=last_failed_at,
        message_id=delivery.message_id,
        body=delivery.body,
        redrive_count=envelope.redrive_count if envelope else 0,
        traceback=_text(record.get("traceback")),
    )


def decode_or_none(body: str) -> Envelope | None:
    """The body's envelope, or None when it is foreign or malformed."""
    try:
        return decode(body)
    except DecodeError:
        return None


def _dead_letter_record(delivery: Delivery) -> dict[str, object]:
    raw = delivery.attributes.get(DEAD_LETTER_ATTRIBUTE)
    if raw is None:
        return {}
    try:
        record = json.loads(raw)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
