"""jobs.stats(include_age=True) against the moto server: CloudWatch has no SQS data there, so the
oldest message's age reads as unknown, and unknown never makes the queue unhealthy."""

from __future__ import annotations

from collections.abc import Callable

from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.provisioning import ProvisionedQueue


def test_the_age_is_unknown_on_moto_and_does_not_trip_the_age_threshold(
    make_queue: Callable[..., ProvisionedQueue], make_backend: Callable[..., SqsBackend]
) -> None:
    queue = make_queue()
    jobs = CloudJobs(
        settings=Settings(_env_file=None, max_oldest_age_seconds=1),
        backend=make_backend(queue_url=queue.queue_url, dlq_url=queue.dlq_url),
    )
    jobs.backend.send([OutgoingMessage(body="waiting")])

    stats = jobs.stats(include_age=True)

    assert (stats.visible, stats.dlq_depth, stats.oldest_message_age) == (1, 0, None)
    assert stats.is_healthy
