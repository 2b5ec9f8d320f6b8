"""OutcomeApplier: carries the consumer core's outcomes out on a backend, deletes batched by ten."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import timedelta

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

logger = logging.getLogger("cloudjobs.worker")


class OutcomeApplier:
    """Applies outcomes: deletes are buffered and sent ten at a time, the rest go out at once.

    Thread-safe. Call :meth:`flush` to send buffered deletes (the worker does so on a timer, and
    always before it exits).

    Attributes:
        counts: outcomes applied so far, by kind (``completed``, ``retried``, ``dead_lettered``...).
    """

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self._backend = backend
        self._clock = clock
        self._lock = threading.Lock()
        self._pending_deletes: list[str] = []
        self._oldest_pending: float | None = None
        self.counts: Counter[str] = Counter()

    def apply(self, delivery: Delivery, outcome: Outcome) -> None:
        """Carry out one outcome for one delivery."""
        match outcome:
            case Completed() | Cancelled():
                self._delete_later(delivery.receipt)
                self._count("completed" if isinstance(outcome, Completed) else "cancelled")
            case Retry(delay=delay):
                self._change_visibility(delivery, delay)
                self._count("retried")
            case Deferred(delay=delay, requeue=None):
                self._change_visibility(delivery, delay)
                self._count("deferred")
            case Deferred(delay=delay, requeue=OutgoingMessage() as copy):
                self._requeue(delivery, copy, delay)
            case Released():
                self._change_visibility(delivery, timedelta(0))
                self._count("released")
            case DeadLetter():
                self._dead_letter(delivery, outcome)

    def flush(self) -> None:
        """Send every buffered delete now."""
        with self._lock:
            receipts, self._pending_deletes = self._pending_deletes, []
            self._oldest_pending = None
        for start in range(0, len(receipts), MAX_BATCH_ENTRIES):
            self._delete(receipts[start : start + MAX_BATCH_ENTRIES])

    def oldest_pending_age(self) -> float | None:
        """Seconds the oldest buffered delete has waited, or None when none waits."""
        with self._lock:
            if self._oldest_pending is None:
                return None
            return time.monotonic() - self._oldest_pending

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _delete_later(self, receipt: str) -> None:
        with self._lock:
            self._pending_deletes.append(receipt)
            if self._oldest_pending is None:
                self._oldest_pending = time.monotonic()
            if len(self._pending_deletes) < MAX_BATCH_ENTRIES:
                return
            batch, self._pending_deletes = self._pending_deletes, []
            self._oldest_pending = None
        self._delete(batch)

    def _delete(self, receipts: list[str]) -> None:
        try:
            failed = self._backend.delete(receipts)
        except CloudjobsError:
            # Not deleted means redelivered after the visibility timeout: duplicated, never lost.
            logger.exception("deleting %d messages failed; they will be delivered again", len(receipts))
            return
        if failed:
            logger.error("%d messages could not be deleted; they will be delivered again", len(failed))

    def _change_visibility(self, delivery: Delivery, delay: timedelta) -> None:
        try:
            self._backend.change_visibility([(delivery.receipt, delay)])
        except CloudjobsError:
            logger.exception("changing visibility of message %s failed", delivery.message_id)

    def _requeue(self, delivery: Delivery, copy: OutgoingMessage, delay: timedelta) -> None:
        try:
            [result] = self._backend.send([copy])
        except CloudjobsError:
            logger.exception("re-sending deferred message %s failed", delivery.message_id)
            result = None
        if result is None or not result.is_sent:
            self._change_visibility(delivery, delay)
            self._count("deferred")
            return
        # Delete only after the copy is sent: a crash in between duplicates, never loses.
        self._delete_later(delivery.receipt)
        self._count("requeued")

    def _dead_letter(self, delivery: Delivery, outcome: DeadLetter) -> None:
        attributes = dead_letter_attributes(outcome, failed_at=self._clock.now())
        try:
            self._backend.dead_letter(delivery, attributes)
        except CloudjobsError:
            # Keep the message: the queue's own redrive policy still moves it after maxReceiveCount.
            logger.exception("dead-lettering message %s failed; it stays on the queue", delivery.message_id)
            self._count("dead_letter_failed")
            return
        # Delete only after the DLQ has the copy: a crash in between duplicates, never loses.
        self._delete_later(delivery.receipt)
        self._count("dead_lettered")
        logger.warning(
            "message %s dead-lettered: %s (%s)",
            delivery.message_id,
            outcome.reason,
            outcome.error,
            extra={"job_type": outcome.job_type, "reason": outcome.reason},
        )
