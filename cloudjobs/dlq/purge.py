"""Purging the dead-letter queue: all of it with PurgeQueue, or only what matches a filter."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cloudjobs.backends.base import DeadLetterAdmin
from cloudjobs.dlq.browse import holding
from cloudjobs.dlq.models import DeadJob, read_dead_job
from cloudjobs.errors import ConfigurationError


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


def purge_matching(admin: DeadLetterAdmin, *, matches: Callable[[DeadJob], bool], hold: timedelta) -> int:
    """Delete the DLQ messages that ``matches``, release the rest; returns the exact number deleted."""
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
    return deleted
