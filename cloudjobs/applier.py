"""OutcomeApplier: carries the pipeline's outcomes out on a backend, the same way for every runtime.

=============== ==========================================================================
outcome         carried out as
=============== ==========================================================================
``Completed``   acknowledged
``Cancelled``   acknowledged
``DeadLetter``  sent to the DLQ with its reason, then acknowledged (kept if the send fails)
``Retry``       hidden for the backoff delay
``Deferred``    hidden for the delay; or, with ``requeue``, the copy is sent and the original
                acknowledged (hidden if the send fails)
``Released``    hidden for 0 s: visible again at once
=============== ==========================================================================

What "acknowledge" and "hide" mean is a strategy of the runtime:

- acknowledging: :class:`BatchedDeletes` (the worker and ``drain``: DeleteMessageBatch by tens) or
  :class:`LeftToLambda` (Lambda deletes every record its function does not report);
- hiding: :class:`ImmediateVisibility` (one ChangeMessageVisibility per outcome, the worker) or
  :class:`BufferedVisibility` (ChangeMessageVisibilityBatch by tens, Lambda, sent before it returns).

:meth:`OutcomeApplier.apply` returns whether the message stays on the queue (not acknowledged):
Lambda reports those records, and a FIFO group does not go on past one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Final, Protocol

from cloudjobs.backends.base import MAX_BATCH_ENTRIES, Backend, Delivery, OutgoingMessage
from cloudjobs.clock import Clock
from cloudjobs.errors import CloudjobsError
from cloudjobs.outcomes import (
    Cancelled,
    Completed,
    DeadLetter,
    Deferred,
    Outcome,
    Released,
    Retry,
    dead_letter_attributes,
)

logger = logging.getLogger("cloudjobs.applier")

_FLUSH_RESERVE: Final = timedelta(milliseconds=500)
"""Below this much time left, Lambda's waiting visibility changes are skipped (see BufferedVisibility)."""


class Acknowledging(Protocol):
    """How a runtime removes a finished message from the queue."""

    def acknowledge(self, delivery: Delivery) -> None:
        """The message is done with (it may be deleted now or later)."""
        ...

    def flush(self) -> None:
        """Send whatever is buffered."""
        ...


class Hiding(Protocol):
    """How a runtime makes a message invisible until it should run again."""

    def hide(self, delivery: Delivery, delay: timedelta) -> None:
        """Make the message visible again after ``delay`` (0: at once)."""
        ...

    def flush(self) -> None:
        """Send whatever is buffered."""
        ...


class BatchedDeletes:
    """Deletes buffered and sent ten at a time (and on :meth:`flush`). Thread-safe.

    With ``deferred``, the tenth delete does not send its batch: the batch waits until the caller
    sends it with :meth:`send_due` (a worker's handler does so once the message no longer takes
    room on the dispatcher, so a receive need not wait on a delete's round trip), or until
    :meth:`flush`; :meth:`wait_sent` waits for batches other threads are sending.
    """

    def __init__(self, backend: Backend, *, deferred: bool = False) -> None:
        self._backend = backend
        self._deferred = deferred
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)
        self._pending: list[str] = []
        self._due: list[list[str]] = []
        self._sending = 0
        self._oldest_pending: float | None = None

    def acknowledge(self, delivery: Delivery) -> None:
        """Buffer the delete; a tenth one sends the batch (or, deferred, makes it due)."""
        with self._lock:
            self._pending.append(delivery.receipt)
            if self._oldest_pending is None:
                self._oldest_pending = time.monotonic()
            if len(self._pending) < MAX_BATCH_ENTRIES:
                return
            batch, self._pending = self._pending, []
            self._oldest_pending = None
            if self._deferred:
                self._due.append(batch)
                return
        self._delete(batch)

    def send_due(self) -> None:
        """Send the full batches waiting (deferred)."""
        with self._lock:
            if not self._due:
                return
            due, self._due = self._due, []
            self._sending += 1
        try:
            for batch in due:
                self._delete(batch)
        finally:
            with self._lock:
                self._sending -= 1
                self._sent.notify_all()

    def flush(self) -> None:
        """Send every buffered delete now (full batches left due too)."""
        with self._lock:
            receipts, self._pending = self._pending, []
            due, self._due = self._due, []
            self._oldest_pending = None
        for batch in due:
            self._delete(batch)
        for start in range(0, len(receipts), MAX_BATCH_ENTRIES):
            self._delete(receipts[start : start + MAX_BATCH_ENTRIES])

    def wait_sent(self) -> None:
        """Wait until no batch is being sent by :meth:`send_due` (at shutdown, after :meth:`flush`)."""
        with self._lock:
            self._sent.wait_for(lambda: self._sending == 0)

    def oldest_pending_age(self) -> float | None:
        """Seconds the oldest buffered delete has waited, or None when none waits."""
        with self._lock:
            if self._oldest_pending is None:
                return None
            return time.monotonic() - self._oldest_pending

    def _delete(self, receipts: list[str]) -> None:
        # Not deleted means redelivered after the visibility timeout: duplicated, never lost.
        failed = _logging_failures(
            lambda: self._backend.delete(receipts),
            f"deleting {len(receipts)} messages failed; they will be delivered again",
        )
        if failed:
            logger.error("%d messages could not be deleted; they will be delivered again", len(failed))


class LeftToLambda:
    """Nothing to send: Lambda deletes the records a function does not report."""

    def acknowledge(self, delivery: Delivery) -> None:
        """Leave it to Lambda."""

    def flush(self) -> None:
        """Nothing is buffered."""


class ImmediateVisibility:
    """One ChangeMessageVisibility per hidden message, sent at once."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def hide(self, delivery: Delivery, delay: timedelta) -> None:
        """Change the message's visibility now."""
        try:
            self._backend.change_visibility([(delivery.receipt, delay)])
        except CloudjobsError:
            logger.exception("changing visibility of message %s failed", delivery.message_id)

    def flush(self) -> None:
        """Nothing is buffered."""


class BufferedVisibility:
    """Visibility changes buffered and sent ten at a time, the rest on :meth:`flush` (Lambda's).

    The last call before an invocation returns is then small whatever the batch size (up to 10,000
    records). Below half a second of the invocation left, waiting changes are skipped: those
    messages come back after the queue's visibility timeout instead. Thread-safe.

    Args:
        backend: where the changes go.
        remaining: the time left in the invocation.
    """

    def __init__(self, backend: Backend, remaining: Callable[[], timedelta]) -> None:
        self._backend = backend
        self._remaining = remaining
        self._lock = threading.Lock()
        self._pending: list[tuple[str, timedelta]] = []

    def hide(self, delivery: Delivery, delay: timedelta) -> None:
        """Buffer the change; a tenth one sends the batch."""
        with self._lock:
            self._pending.append((delivery.receipt, delay))
            if len(self._pending) < MAX_BATCH_ENTRIES:
                return
        self._send(final=False)

    def flush(self) -> None:
        """Send every waiting change (unless the invocation is about to time out)."""
        self._send(final=True)

    def _send(self, *, final: bool) -> None:
        while True:
            with self._lock:
                if len(self._pending) < (1 if final else MAX_BATCH_ENTRIES):
                    return
                if self._remaining() < _FLUSH_RESERVE:
                    skipped, self._pending = len(self._pending), []
                    logger.warning(
                        "%d visibility changes skipped, the invocation is about to time out; those "
                        "messages reappear after the queue's visibility timeout",
                        skipped,
                    )
                    return
                chunk = self._pending[:MAX_BATCH_ENTRIES]
                del self._pending[:MAX_BATCH_ENTRIES]
            self._change_visibility(chunk)

    def _change_visibility(self, chunk: list[tuple[str, timedelta]]) -> None:
        # Not changed: they come back after the queue's visibility timeout instead.
        gone = _logging_failures(
            lambda: self._backend.change_visibility(chunk),
            f"changing the visibility of {len(chunk)} messages failed",
        )
        if gone:
            # Already back on the queue or deleted: harmless.
            logger.info("%d messages were no longer in flight for their visibility change", len(gone))


class OutcomeApplier:
    """Carries outcomes out (see the module docstring); thread-safe.

    Args:
        backend: where dead letters and re-sent copies go.
        clock: the time stamped on dead letters.
        acknowledging: how finished messages leave the queue (default: :class:`BatchedDeletes`).
        hiding: how messages are hidden until their next run (default: :class:`ImmediateVisibility`).

    Attributes:
        counts: outcomes applied so far, by kind (``completed``, ``retried``, ``dead_lettered``...).
    """

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        *,
        acknowledging: Acknowledging | None = None,
        hiding: Hiding | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._acknowledging = acknowledging or BatchedDeletes(backend)
        self._hiding = hiding or ImmediateVisibility(backend)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def apply(self, delivery: Delivery, outcome: Outcome) -> bool:
        """Carry out one outcome for one delivery; returns whether the message stays on the queue."""
        match outcome:
            case Completed() | Cancelled():
                self._acknowledging.acknowledge(delivery)
                self._count("completed" if isinstance(outcome, Completed) else "cancelled")
                return False
            case DeadLetter():
                return not self._dead_letter(delivery, outcome)
            case Deferred(delay=delay, requeue=OutgoingMessage() as copy):
                if self._requeue(delivery, copy):
                    self._acknowledging.acknowledge(delivery)
                    self._count("requeued")
                    return False
                self._hiding.hide(delivery, delay)
                self._count("deferred")
            case Retry(delay=delay):
                self._hiding.hide(delivery, delay)
                self._count("retried")
            case Deferred(delay=delay):
                self._hiding.hide(delivery, delay)
                self._count("deferred")
            case Released():
                self._hiding.hide(delivery, timedelta(0))
                self._count("released")
        return True

    def flush(self) -> None:
        """Send every buffered delete and visibility change now."""
        self._acknowledging.flush()
        self._hiding.flush()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _requeue(self, delivery: Delivery, copy: OutgoingMessage) -> bool:
        try:
            [result] = self._backend.send([copy])
        except CloudjobsError:
            logger.exception("re-sending deferred message %s failed", delivery.message_id)
            return False
        if not result.is_sent:
            logger.error("re-sending deferred message %s refused: %s", delivery.message_id, result.error)
        # Acknowledged only after the copy is sent: a crash in between duplicates, never loses.
        return result.is_sent

    def _dead_letter(self, delivery: Delivery, outcome: DeadLetter) -> bool:
        attributes = dead_letter_attributes(outcome, failed_at=self._clock.now())
        try:
            self._backend.dead_letter(delivery, attributes)
        except CloudjobsError:
            # Keep the message: the queue's own redrive policy still moves it after maxReceiveCount.
            logger.exception("dead-lettering message %s failed; it stays on the queue", delivery.message_id)
            self._count("dead_letter_failed")
            return False
        # Acknowledged only after the DLQ has the copy: a crash in between duplicates, never loses.
        self._acknowledging.acknowledge(delivery)
        self._count("dead_lettered")
        logger.warning(
            "job %s (%s) dead-lettered: %s (%s); message %s",
            outcome.job_id or "?",
            outcome.job_type or "unknown type",
            outcome.reason,
            outcome.error,
            delivery.message_id,
            extra={"job_id": outcome.job_id, "job_type": outcome.job_type, "reason": outcome.reason},
        )
        return True


def _logging_failures(call: Callable[[], list[str]], failure: str) -> list[str]:
    """``call()``'s answer (the entries that failed), or none after logging ``failure`` if it raised."""
    try:
        return call()
    except CloudjobsError:
        logger.exception(failure)
        return []
