"""Sending one producer call's jobs to the queues they go to: all checked first, then sent per queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloudjobs.errors import BatchEnqueueError, CloudjobsError
from cloudjobs.producer import CheckedJobs, EnqueueRequest, Producer


@dataclass(frozen=True, slots=True)
class QueueShare:
    """The jobs of one call that go to one queue (the app's name for it): their positions in the
    call, checked."""

    producer: Producer
    positions: list[int]
    jobs: CheckedJobs
    queue: str


def check_by_queue(
    requests: Sequence[EnqueueRequest], producer_of: Callable[[str], Producer]
) -> list[QueueShare]:
    """Build and check every message, per queue, before any is sent.

    Raises:
        UnknownQueueError: a request names a queue the app lacks.
        PayloadTooLargeError, InvalidDelayError, InvalidGroupIdError: as :meth:`Producer.check`.
    """
    positions: dict[str, list[int]] = {}
    for index, request in enumerate(requests):
        positions.setdefault(request.queue, []).append(index)
    shares = []
    for name, indexes in positions.items():
        producer = producer_of(name)
        shares.append(QueueShare(producer, indexes, producer.check([requests[i] for i in indexes]), name))
    return shares


def send_by_queue(shares: Sequence[QueueShare]) -> list[str]:
    """Send checked jobs queue by queue; returns job ids in request order.

    With one queue, errors are its producer's. With several, a queue that fails does not stop the
    others, and one :class:`BatchEnqueueError` names every entry not sent by its position.

    Raises:
        BatchEnqueueError: some entries could not be sent (``.sent`` holds the ids of the rest).
        BackendError: the only queue refused the whole request.
    """
    if len(shares) == 1:
        return shares[0].producer.send(shares[0].jobs)
    sent: list[str | None] = [None] * sum(len(share.positions) for share in shares)
    failures: dict[int, str] = {}
    for share in shares:
        try:
            ids: list[str | None] = list(share.producer.send(share.jobs))
        except BatchEnqueueError as exc:
            ids = exc.sent
            failures.update({share.positions[i]: error for i, error in exc.failures.items()})
        except CloudjobsError as exc:
            ids = [None] * len(share.positions)
            failures.update({index: str(exc) for index in share.positions})
        for index, job_id in zip(share.positions, ids, strict=True):
            sent[index] = job_id
    if failures:
        raise BatchEnqueueError(sent=sent, failures=failures)
    return [job_id for job_id in sent if job_id is not None]
