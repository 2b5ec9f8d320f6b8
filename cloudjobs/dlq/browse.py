"""Reading the dead-letter queue without losing anything: receive, hold, release together.

Every operation on the DLQ (list, redrive, purge) reads it the same way. Messages are received with
a visibility ``hold`` long enough for the operation, each message is handed out once (SQS may
return a message again within one read when its visibility lapses), and every message still held
is released (visibility 0) when the block ends, also when it ends with an error. Nothing is
deleted here; callers delete what they moved or purged and :meth:`HeldMessages.forget` it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from cloudjobs.backends.base import MAX_BATCH_ENTRIES, DeadLetterAdmin, Delivery
from cloudjobs.errors import CloudjobsError

logger = logging.getLogger("cloudjobs.dlq")


class HeldMessages:
    """The DLQ messages one operation has received and still holds invisible."""

    def __init__(self, admin: DeadLetterAdmin, *, hold: timedelta) -> None:
        self._admin = admin
        self._hold = hold
        self._receipts: dict[str, str] = {}  # message id → latest receipt
        self._seen: set[str] = set()

    def __len__(self) -> int:
        """Distinct messages received so far (held or already deleted)."""
        return len(self._seen)

    def receive(self, max_messages: int = MAX_BATCH_ENTRIES) -> list[Delivery]:
        """Receive messages not handed out before; an empty list means there are no more.

        A receive that brings only messages seen before also ends the read: their visibility
        lapsed, so the queue has come round again.
        """
        deliveries = self._admin.receive_dead_letters(max_messages=max_messages, visibility=self._hold)
        fresh: list[Delivery] = []
        for delivery in deliveries:
            if delivery.message_id in self._seen:
                # The earlier receipt is stale now; release must use the newest one.
                if delivery.message_id in self._receipts:
                    self._receipts[delivery.message_id] = delivery.receipt
                else:
                    self._release([delivery.receipt])
                continue
            self._seen.add(delivery.message_id)
            self._receipts[delivery.message_id] = delivery.receipt
            fresh.append(delivery)
        return fresh

    def forget(self, message_id: str) -> None:
        """Stop holding a message (it was deleted)."""
        self._receipts.pop(message_id, None)

    def release_all(self) -> None:
        """Make every held message visible again at once, ten per request."""
        receipts, self._receipts = list(self._receipts.values()), {}
        for start in range(0, len(receipts), MAX_BATCH_ENTRIES):
            self._release(receipts[start : start + MAX_BATCH_ENTRIES])

    def _release(self, receipts: list[str]) -> None:
        self._admin.change_dead_letter_visibility([(receipt, timedelta(0)) for receipt in receipts])


@contextmanager
def holding(admin: DeadLetterAdmin, *, hold: timedelta) -> Iterator[HeldMessages]:
    """Hold DLQ messages for the block; release them all when it ends, however it ends.

    A release that fails after the block raised is logged, not raised: the block's own error
    matters more, and the messages become visible again by themselves when ``hold`` runs out.
    """
    held = HeldMessages(admin, hold=hold)
    try:
        yield held
    except BaseException:
        try:
            held.release_all()
        except CloudjobsError:
            logger.exception("releasing dead-letter messages failed; they are visible again after %s", hold)
        raise
    held.release_all()
