"""Redrive by receiving: DLQ → source queue, one message at a time in batches, never lost.

Used whenever filters are given, for a dry run, and on backends without server-side move tasks
(the memory backend, moto). Each matching message is received, sent to the source queue, and only
then deleted from the DLQ: a crash in between leaves the job in both queues (a duplicate, with the
same job id, so idempotent jobs still run once), never in neither. Messages that do not match are
held until the end and released together, untouched.

The copy sent back keeps the job id, the body's payload and every attribute (trace context,
correlation id, the sender's own) except the dead-letter record; its envelope's ``redrive_count``
grows by one and ``attempt_offset`` returns to 0, so attempts restart at 1 (the new message's
receive count starts at 1). Foreign bodies go back unchanged.

A redrive moves what the DLQ held when it started, not what arrives while it runs. With a worker
running and a handler that still fails, every copy sent back soon reaches the DLQ again as a new
message (new id, and SQS's own redrive keeps its send time, so neither tells it apart); moving it
again would never end. So a run remembers the copies it sent (:class:`OwnCopies`), never moves one
of them a second time, and ends when it meets one after reading as many messages as the DLQ held
at the start (see :func:`redrive_by_receiving`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from cloudjobs.backends.base import (
    MAX_BATCH_ENTRIES,
    MAX_BATCH_REQUEST_SIZE,
    MAX_MESSAGE_ATTRIBUTES,
    Backend,
    DeadLetterAdmin,
    Delivery,
    OutgoingMessage,
    attribute_names,
)
from cloudjobs.dlq.browse import holding
from cloudjobs.dlq.models import (
    FIRST_FAILED_ATTRIBUTE,
    DeadJob,
    Progress,
    RedriveReport,
    RedriveStop,
    decode_or_none,
    read_dead_job,
)
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE, encode
from cloudjobs.errors import CloudjobsError
from cloudjobs.payloads.pointer import (
    ENVELOPE_ATTRIBUTE,
    override_attribute,
    pointer_of,
    read_pointer,
    redrive_count_of,
)


class Pacer:
    """Keeps a run at or below ``rate`` messages per second (None: no limit).

    Args:
        rate: messages per second.
        sleep: waits the given seconds (injectable for tests).
        monotonic: a monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, rate: float | None, *, sleep: Callable[[float], None], monotonic: Callable[[], float]
    ) -> None:
        self._rate = rate
        self._sleep = sleep
        self._monotonic = monotonic
        self._started: float | None = None
        self._sent = 0

    @property
    def batch_size(self) -> int:
        """How many messages to move per step: fewer than ten when the rate is below ten a second."""
        if self._rate is None:
            return MAX_BATCH_ENTRIES
        return min(MAX_BATCH_ENTRIES, max(1, math.floor(self._rate)))

    def wait_to_send(self, count: int) -> None:
        """Wait until ``count`` more messages may go out."""
        if self._rate is None:
            return
        now = self._monotonic()
        if self._started is None:
            self._started = now
        due = self._started + self._sent / self._rate
        if due > now:
            self._sleep(due - now)
        self._sent += count


class OwnCopies:
    """The copies one redrive run has sent back, so that it knows them when they reach the DLQ again.

    The mark is the body itself, which every way back to the DLQ keeps unchanged (the consumer's
    dead-lettering copies it; SQS's own redrive moves the message as it is): an envelope is known
    by its job id and the ``redrive_count`` the run gave it, which no message in the DLQ at the
    start carries unless the same job is there twice, and a foreign body by its digest (an identical
    foreign body still in the DLQ is then taken for the copy and left there). Nothing is added to
    the message, so no attribute slot is spent and none can be dropped on the way. The marks last
    for one run: a later redrive moves the copies like any other message.
    """

    def __init__(self) -> None:
        self._marks: set[tuple[str, int] | bytes] = set()

    def add(self, message: OutgoingMessage) -> None:
        """Remember a copy the run has sent back."""
        self._marks.add(_mark(message.body, message.attributes))

    def is_own(self, delivery: Delivery) -> bool:
        """True when ``delivery`` is a copy this run sent back (or looks exactly like one)."""
        return _mark(delivery.body, delivery.attributes) in self._marks


def _mark(body: str, attributes: Mapping[str, str]) -> tuple[str, int] | bytes:
    envelope = decode_or_none(body)
    if envelope is not None:
        return (envelope.id, envelope.redrive_count)
    if ENVELOPE_ATTRIBUTE in attributes and read_pointer(body) is not None:
        # A pointer's body never changes: the redrive count the run gave it is beside it.
        return (body, redrive_count_of(attributes))
    return hashlib.sha256(body.encode("utf-8")).digest()


def redriven_message(delivery: Delivery, job: DeadJob, *, is_fifo: bool) -> OutgoingMessage:
    """The copy of a DLQ message to send back to the source queue."""
    attributes = {name: value for name, value in delivery.attributes.items() if name != DEAD_LETTER_ATTRIBUTE}
    typed = dict(delivery.typed_attributes)
    if job.first_failed_at is not None and (
        FIRST_FAILED_ATTRIBUTE in attributes
        or len(attribute_names(attributes, typed)) < MAX_MESSAGE_ATTRIBUTES
    ):
        attributes[FIRST_FAILED_ATTRIBUTE] = job.first_failed_at.isoformat()
    envelope = decode_or_none(delivery.body)
    body = delivery.body
    if envelope is not None:
        body = encode(
            dataclasses.replace(envelope, redrive_count=envelope.redrive_count + 1, attempt_offset=0)
        )
    elif pointer_of(delivery) is not None:
        # The stored body stays: the redrive's changes travel beside the pointer.
        attributes = override_attribute(
            attributes, redrive_count=redrive_count_of(attributes) + 1, attempt_offset=0
        )
    return OutgoingMessage(
        body=body,
        attributes=attributes,
        group_id=(delivery.group_id or job.job_id or delivery.message_id) if is_fifo else delivery.group_id,
        # The DLQ message's id: re-running a redrive that crashed after the send is deduplicated.
        deduplication_id=delivery.message_id if is_fifo else None,
        system_attributes=delivery.system_attributes,
        typed_attributes=typed,
    )


def redrive_by_receiving(
    backend: Backend,
    admin: DeadLetterAdmin,
    *,
    matches: Callable[[DeadJob], bool],
    dry_run: bool,
    hold: timedelta,
    pacer: Pacer,
    on_progress: Callable[[Progress], None] | None,
) -> RedriveReport:
    """Move every DLQ message that ``matches`` back to ``backend``'s queue (see the module notes).

    A copy the run sent back that reaches the DLQ again is never moved again: it stays held
    (invisible) until the run ends, and is counted as ``returned``. Meeting one does not end the run
    at once, because SQS returns a standard queue's messages in no set order and some of those there
    at the start may still be unread; the run ends when it meets one after it has read as many
    messages as the DLQ held at the start (its approximate depth, read once; 0 when it cannot be
    read), or when the DLQ has nothing more to read. Should the depth read low, a few messages of the
    start may be left behind: the report says the run stopped on its own messages, and running it
    again moves them.
    """
    # A dry run moves nothing, so it meets no copy of its own: the depth is only for the progress bar.
    depth = _depth(admin) if on_progress is not None or not dry_run else None
    is_fifo = backend.info().is_fifo
    own = OwnCopies()
    moved: list[DeadJob] = []
    skipped = 0
    returned = 0
    errors: list[str] = []
    stop = RedriveStop.DRAINED
    with holding(admin, hold=hold) as held:
        while deliveries := held.receive(pacer.batch_size):
            handled = len(moved) + skipped + len(errors)
            others = [delivery for delivery in deliveries if not own.is_own(delivery)]
            returned += len(deliveries) - len(others)
            if len(others) < len(deliveries) and handled >= (depth or 0):
                # Past the start's depth, what is left arrived after the start: leave it all.
                stop = RedriveStop.MET_OWN_MESSAGES
                break
            matching: list[tuple[Delivery, DeadJob]] = []
            for delivery in others:
                job = read_dead_job(delivery)
                if matches(job):
                    matching.append((delivery, job))
                else:
                    skipped += 1
            if dry_run:
                moved.extend(job for _, job in matching)
            elif matching:
                pacer.wait_to_send(len(matching))
                for chunk in _by_request_size(matching, is_fifo=is_fifo):
                    moved_now, chunk_errors = _move(backend, admin, chunk, is_fifo=is_fifo, own=own)
                    for delivery, job in moved_now:
                        held.forget(delivery.message_id)
                        moved.append(job)
                    errors.extend(chunk_errors)
            if on_progress is not None:
                on_progress(Progress(done=len(moved) + skipped + len(errors), total=depth))
    return RedriveReport(
        moved=len(moved),
        skipped=skipped,
        failed=len(errors),
        dry_run=dry_run,
        jobs=tuple(moved),
        errors=tuple(errors),
        returned=returned,
        stop=stop,
    )


def _move(
    backend: Backend,
    admin: DeadLetterAdmin,
    chunk: Sequence[tuple[Delivery, DeadJob]],
    *,
    is_fifo: bool,
    own: OwnCopies,
) -> tuple[list[tuple[Delivery, DeadJob]], list[str]]:
    """Send a chunk to the source queue, then delete what was sent from the DLQ."""
    errors: list[str] = []
    messages = [redriven_message(delivery, job, is_fifo=is_fifo) for delivery, job in chunk]
    try:
        results = backend.send(messages)
    except CloudjobsError as exc:
        return [], [f"{_name(job)}: not sent: {exc}" for _, job in chunk]
    sent: list[tuple[Delivery, DeadJob]] = []
    for (delivery, job), message, result in zip(chunk, messages, results, strict=True):
        if result.is_sent:
            # Marked even when the delete below fails: the copy is out there and may come back.
            own.add(message)
            sent.append((delivery, job))
        else:
            errors.append(f"{_name(job)}: not sent: {result.error}")
    if not sent:
        return [], errors
    # Delete only after the source queue has the copy: a crash in between duplicates, never loses.
    try:
        undeleted = set(admin.delete_dead_letters([delivery.receipt for delivery, _ in sent]))
    except CloudjobsError as exc:
        undeleted = {delivery.receipt for delivery, _ in sent}
        problem = str(exc)
    else:
        problem = "the delete was refused"
    moved = [(delivery, job) for delivery, job in sent if delivery.receipt not in undeleted]
    errors.extend(
        f"{_name(job)}: sent, but still in the dead-letter queue ({problem}): it is in both queues"
        for delivery, job in sent
        if delivery.receipt in undeleted
    )
    return moved, errors


def _by_request_size(
    matching: list[tuple[Delivery, DeadJob]], *, is_fifo: bool
) -> list[list[tuple[Delivery, DeadJob]]]:
    # SendMessageBatch takes ten entries and 1 MiB in all: large messages go in smaller batches.
    chunks: list[list[tuple[Delivery, DeadJob]]] = []
    size = 0
    for item in matching:
        message = redriven_message(*item, is_fifo=is_fifo)
        item_size = message.size
        if not chunks or len(chunks[-1]) == MAX_BATCH_ENTRIES or size + item_size > MAX_BATCH_REQUEST_SIZE:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item_size
    return chunks


def _depth(admin: DeadLetterAdmin) -> int | None:
    # For the progress bar's total and the stop rule: a failure to read it must not stop the redrive.
    try:
        counts = admin.dead_letter_message_counts()
    except CloudjobsError:
        return None
    return counts.total if counts is not None else None


def _name(job: DeadJob) -> str:
    return f"job {job.job_id}" if job.job_id else f"message {job.message_id}"
