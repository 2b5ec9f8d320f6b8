"""Unique jobs and results over HTTP: SQS on moto's server, the table on DynamoDB Local (moto's
DynamoDB does not serialise concurrent conditional writes to one item, so racing enqueues need the
real engine)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import boto3
import pytest
from pydantic import BaseModel

from cloudjobs import (
    BackendError,
    CloudJobs,
    JobCancelledError,
    JobFailedError,
    JobNotTrackedError,
    PermanentError,
    ResultTimeoutError,
    Settings,
)
from cloudjobs.backends.base import OutgoingMessage, SendResult
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.envelope import decode
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from cloudjobs.uniqueness.state import UniqueClaim, unique_item_key
from tests.behaviour.conftest import running, wait_for
from tests.dynamodb_local import DynamoDbLocal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

RESERVATION_SECONDS = 1.0
"""The crash tests' reservation timeout (30 s by default), so a dead producer's reservation lapses
soon. Only where nothing races: fifty enqueues on two cores can hold a send past a second, and a send
slower than the reservation timeout is taken over and sent twice (under one job id), as documented."""


class Sync(BaseModel):
    account: str


@pytest.fixture
def local_store(
    dynamodb_local: DynamoDbLocal, aws_environment: dict[str, str]
) -> Iterator[DynamoDbIdempotencyStore]:
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=dynamodb_local.endpoint_url
    )
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    # No clock skew allowance: one machine's clock, and a reservation that lapses when it says.
    yield DynamoDbIdempotencyStore(spec.name, client=client, max_pool_connections=64, clock_skew=timedelta(0))
    delete_table(spec, client=client)
    client.close()


@pytest.fixture
def queue(make_queue: Callable[..., ProvisionedQueue]) -> ProvisionedQueue:
    return make_queue(visibility_timeout_seconds=5, max_receive_count=2)


def _settings(queue: ProvisionedQueue, reservation_seconds: float) -> Settings:
    return Settings(
        _env_file=None,
        queue_url=queue.queue_url,
        dlq_url=queue.dlq_url,
        wait_time_seconds=1,
        backoff_base_seconds=0.2,
        backoff_cap_seconds=0.5,
        unique_reservation_seconds=reservation_seconds,
    )


def _app(
    queue: ProvisionedQueue,
    store: DynamoDbIdempotencyStore,
    backend: SqsBackend | None = None,
    *,
    reservation_seconds: float = 30.0,
) -> CloudJobs:
    settings = _settings(queue, reservation_seconds)
    jobs = CloudJobs(settings=settings, idempotency_store=store, backend=backend)

    @jobs.job("sync-contacts")
    def sync(payload: Sync) -> str:
        return payload.account

    @jobs.job("export", track_status=True)
    def export(payload: Sync) -> dict[str, str]:
        return {"file": f"{payload.account}.csv"}

    @jobs.job("broken", track_status=True, max_attempts=1)
    def broken(payload: Sync) -> None:
        raise PermanentError(f"account {payload.account} is closed")

    return jobs


def _queued_ids(client: SQSClient, queue_url: str) -> list[str]:
    """Every message on the queue, received until empty (and left to reappear)."""
    ids: list[str] = []
    while True:
        messages = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return ids
        ids += [decode(message["Body"]).id for message in messages]


def _depth(client: SQSClient, queue_url: str) -> int:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


# -- unique jobs ----------------------------------------------------------------------------------


def test_fifty_concurrent_enqueues_of_one_key_send_one_message_and_return_one_id(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore, sqs_client: SQSClient
) -> None:
    jobs = _app(queue, local_store)
    racers = 50
    barrier = threading.Barrier(racers)
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def enqueue() -> None:
        barrier.wait()
        try:
            job_id = jobs.enqueue(
                "sync-contacts", Sync(account="7"), unique_for=timedelta(minutes=10), unique_key="acct-7"
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            return
        with lock:
            ids.append(job_id)

    threads = [threading.Thread(target=enqueue) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(ids) == racers
    assert len(set(ids)) == 1
    assert _queued_ids(sqs_client, queue.queue_url) == [ids[0]]


def test_after_the_window_the_next_enqueue_sends_a_new_job(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore, sqs_client: SQSClient
) -> None:
    jobs = _app(queue, local_store)

    def enqueue() -> str:
        return jobs.enqueue("sync-contacts", Sync(account="7"), unique_for=1, unique_key="acct-7")

    first = enqueue()
    assert enqueue() == first
    later: list[str] = []

    def is_new() -> bool:
        later.append(enqueue())
        return later[-1] != first

    wait_for(is_new, message="the window to end")

    assert set(later[:-1]) <= {first}  # every repeat within the window returned the first job
    assert _queued_ids(sqs_client, queue.queue_url) == [first, later[-1]]


class _DownOnce(SqsBackend):
    """The queue refuses the first send (the enqueue sees the error)."""

    def __init__(self, queue_url: str) -> None:
        super().__init__(queue_url=queue_url)
        self.failures = 1

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if self.failures:
            self.failures -= 1
            raise BackendError("the queue is down")
        return super().send(messages)


def test_a_send_that_raises_does_not_swallow_the_next_enqueue(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore, sqs_client: SQSClient
) -> None:
    backend = _DownOnce(queue.queue_url)
    jobs = _app(queue, local_store, backend)
    try:
        with pytest.raises(BackendError):
            jobs.enqueue("sync-contacts", Sync(account="7"), unique_for=600, unique_key="acct-7")
        job_id = jobs.enqueue("sync-contacts", Sync(account="7"), unique_for=600, unique_key="acct-7")
    finally:
        backend.close()

    assert _queued_ids(sqs_client, queue.queue_url) == [job_id]


def test_a_producer_killed_after_its_reservation_does_not_swallow_the_job_for_the_window(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore, sqs_client: SQSClient
) -> None:
    # What a producer killed between the reservation write and the send leaves: a reservation never
    # confirmed, and nothing on the queue.
    reserved = local_store.reserve(
        UniqueClaim(
            key=unique_item_key("sync-contacts", "acct-7"),
            job_id="killed-producers-job",
            job_type="sync-contacts",
            window=timedelta(minutes=10),
            reservation=timedelta(seconds=RESERVATION_SECONDS),
        )
    )
    assert reserved.job_id == "killed-producers-job"
    jobs = _app(queue, local_store, reservation_seconds=RESERVATION_SECONDS)

    def enqueue() -> str:
        return jobs.enqueue("sync-contacts", Sync(account="7"), unique_for=600, unique_key="acct-7")

    assert enqueue() == "killed-producers-job"  # within the reservation timeout: nothing sent
    assert _depth(sqs_client, queue.queue_url) == 0
    # Enqueue again until one takes the lapsed reservation over and sends the job.
    wait_for(
        lambda: enqueue() == "killed-producers-job" and _depth(sqs_client, queue.queue_url) > 0,
        message="a takeover to send the job",
    )

    assert enqueue() == "killed-producers-job"
    assert _queued_ids(sqs_client, queue.queue_url) == ["killed-producers-job"]


# -- results --------------------------------------------------------------------------------------


def test_a_result_comes_back_through_a_worker(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    jobs = _app(queue, local_store)
    registered = jobs.enqueue("export", Sync(account="7"))
    per_enqueue = jobs.enqueue("sync-contacts", Sync(account="8"), track_status=True)

    with running(jobs, concurrency=2, queue_metrics_interval=None):
        assert jobs.result(registered, timeout=30) == {"file": "7.csv"}
        assert jobs.result(per_enqueue, timeout=30) == "8"
        # Another process knows only the id: it finds the record on the index.
        assert _app(queue, local_store).result(per_enqueue, timeout=30) == "8"


def test_a_dead_lettered_job_raises_job_failed(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    jobs = _app(queue, local_store)
    job_id = jobs.enqueue("broken", Sync(account="7"))

    with running(jobs, concurrency=1, queue_metrics_interval=None), pytest.raises(JobFailedError) as failed:
        jobs.result(job_id, timeout=30)

    assert "account 7 is closed" in (failed.value.error or "")


def test_a_cancelled_job_raises_job_cancelled(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    jobs = _app(queue, local_store)
    job_id = jobs.enqueue("export", Sync(account="7"), delay=60, track_status=True)
    jobs.cancel(job_id)

    with pytest.raises(JobCancelledError):
        jobs.result(job_id, timeout=30)


def test_a_job_not_run_in_time_raises_result_timeout(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    jobs = _app(queue, local_store)
    job_id = jobs.enqueue("export", Sync(account="7"), track_status=True)  # no worker runs it

    with pytest.raises(ResultTimeoutError) as late:
        jobs.result(job_id, timeout=0.5)

    assert late.value.state == "pending"


def test_a_job_without_a_record_raises_not_tracked(
    queue: ProvisionedQueue, local_store: DynamoDbIdempotencyStore
) -> None:
    jobs = _app(queue, local_store)
    job_id = jobs.enqueue("sync-contacts", Sync(account="7"))

    with pytest.raises(JobNotTrackedError):
        jobs.result(job_id, timeout=30)  # this process knows it keeps none: at once
    with pytest.raises(JobNotTrackedError):
        _app(queue, local_store).result(job_id, timeout=30)  # elsewhere: after the index's grace
