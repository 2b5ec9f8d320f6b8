"""``overlap="skip"`` over HTTP: a job longer than its schedule's interval, run by a real worker on the
moto server's SQS, its status records and the schedule's claims on DynamoDB Local."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import boto3
import pytest

from cloudjobs import CloudJobs, Job, Settings
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from tests.behaviour.conftest import running, wait_for
from tests.dynamodb_local import DynamoDbLocal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

RUN_SECONDS = 2.5


@pytest.fixture
def table(
    dynamodb_local: DynamoDbLocal, aws_environment: dict[str, str]
) -> Iterator[DynamoDbIdempotencyStore]:
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=dynamodb_local.endpoint_url
    )
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    yield DynamoDbIdempotencyStore(spec.name, client=client)
    delete_table(spec, client=client)
    client.close()


def test_a_job_longer_than_its_interval_never_overlaps_and_the_skipped_ticks_are_counted(
    make_queue: Callable[..., ProvisionedQueue], table: DynamoDbIdempotencyStore
) -> None:
    queue = make_queue(visibility_timeout_seconds=30)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, queue_url=queue.queue_url, wait_time_seconds=1),
        idempotency_store=table,
    )
    runs: list[tuple[str, float, float]] = []

    @jobs.job("export", track_status=True)
    def export(payload: dict[str, object], job: Job) -> None:
        started = time.monotonic()
        time.sleep(RUN_SECONDS)  # the work itself
        runs.append((job.id, started, time.monotonic()))

    jobs.schedule("export-every-second", every=1, job_type="export", overlap="skip")
    scheduler = jobs.scheduler()
    thread = threading.Thread(target=scheduler.run, name="test-scheduler")
    with running(jobs, concurrency=4):
        thread.start()
        try:
            wait_for(lambda: len(runs) >= 3, message="three runs", timeout=60)
        finally:
            scheduler.stop()
            thread.join(timeout=30)

    ordered = sorted(runs, key=lambda run: run[1])
    for (_, _, ended), (_, started, _) in itertools.pairwise(ordered):
        assert started >= ended, "a run started while the previous one was still running"
    counts = scheduler.counts
    # Each run lasts 2.5 s: at least two ticks fall while it is pending or running.
    assert counts["skipped_overlap"] >= 2 * (len(runs) - 1)
    assert counts["fired"] >= len(runs)
    assert counts["failed"] == 0
