"""Purging the dead-letter queue: all of it with PurgeQueue, or only what matches a filter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from cloudjobs.backends.base import DeadLetterAdmin, Delivery
from cloudjobs.dlq.browse import holding
from cloudjobs.dlq.models import DeadJob, read_dead_job
from cloudjobs.errors import ConfigurationError
from cloudjobs.payloads.pointer import pointer_of
from cloudjobs.payloads.store import PayloadStore

logger = logging.getLogger("cloudjobs.dlq")


def purge_all(admin: DeadLetterAdmin) -> int:
    """Purge the whole DLQ; returns its approximate depth read just before.

    Raises:
        ConfigurationError: the queue has no dead-letter queue.
        BackendError: the purge was refused (on AWS, at most one purge a minute per queue).
    """
    counts = admin.dead_letter_message_counts()
    if counts is None:
        raise ConfigurationError("the queue has no dead-letter queue to purge")
    admin.purge_dead_letters()
    return counts.total


def purge_matching(
    admin: DeadLetterAdmin,
    *,
    matches: Callable[[DeadJob], bool],
    hold: timedelta,
    payloads: PayloadStore | None = None,
) -> int:
    """Delete the DLQ messages that ``matches``, release the rest; returns the exact number deleted.

    With ``payloads``, the stored body of each deleted pointer message is deleted after it (a failed
    object delete is logged: the bucket's lifecycle rule expires it).
    """
    deleted = 0
    with holding(admin, hold=hold) as held:
        while deliveries := held.receive():
            doomed = [delivery for delivery in deliveries if matches(read_dead_job(delivery))]
            if not doomed:
                continue
            failed = set(admin.delete_dead_letters([delivery.receipt for delivery in doomed]))
            for delivery in doomed:
                if delivery.receipt not in failed:
                    held.forget(delivery.message_id)
                    deleted += 1
                    if payloads is not None:
                        _delete_body(payloads, delivery)
    return deleted


def _delete_body(payloads: PayloadStore, delivery: Delivery) -> None:
    pointer = pointer_of(delivery)
    if pointer is None:
        return
    try:
        payloads.delete(pointer)
    except Exception:
        logger.warning(
            "deleting the stored body %s/%s of a purged message failed; the bucket's lifecycle rule "
            "expires it",
            pointer.bucket,
            pointer.key,
            exc_info=True,
        )
