"""Pending records and cancellation in the store, on the memory store and on DynamoDB over HTTP.

The DynamoDB store runs against moto's server and against Amazon's DynamoDB Local (stricter on
expressions), as the other store tests do.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
import pytest

from cloudjobs import LeaseLostError
from cloudjobs.idempotency.base import (
    Acquired,
    AlreadyCancelled,
    CancelOutcome,
    Claim,
    PayloadMismatch,
    Record,
    Status,
    lapse_after,
)
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.provisioning import TableSpec, delete_table, provision_table
from tests.conftest import dynamodb_endpoint

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

SKEW = timedelta(milliseconds=300)
LEASE = timedelta(seconds=30)
RETENTION = timedelta(days=1)


@pytest.fixture(params=["memory", "moto", "dynamodb-local"])
def store(request: pytest.FixtureRequest) -> Iterator[MemoryIdempotencyStore | DynamoDbIdempotencyStore]:
    """The memory store, then the DynamoDB store on moto's server and on DynamoDB Local."""
    if request.param == "memory":
        yield MemoryIdempotencyStore(clock_skew=SKEW)
        return
    endpoint_url = dynamodb_endpoint(request.param, request)
    client: DynamoDBClient = boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url)
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    # A short refresh interval: cancel waits it out when it writes a marker.
    yield DynamoDbIdempotencyStore(
        spec.name, client=client, clock_skew=SKEW, cancel_refresh=timedelta(milliseconds=50)
    )
    delete_table(spec, client=client)
    client.close()


def _claim(job_id: str = "job-1", payload_hash: str = "hash-a") -> Claim:
    return Claim(key=f"report#{job_id}", job_id=job_id, job_type="report", payload_hash=payload_hash)


def _found(store: MemoryIdempotencyStore | DynamoDbIdempotencyStore, job_id: str) -> Record:
    record = store.find(job_id)
    assert record is not None
    return record


def test_a_pending_record_is_written_once_and_the_lease_takes_it_over(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    claim = _claim()
    assert store.put_pending(claim, retention=RETENTION) is True
    assert store.put_pending(claim, retention=RETENTION) is False  # never over a live record

    pending = _found(store, "job-1")
    assert (pending.status, pending.attempts, pending.payload_hash) == (Status.PENDING, 0, "hash-a")

    lease = store.acquire(claim, lease=LEASE, retention=RETENTION)
    assert isinstance(lease, Acquired)
    running = _found(store, "job-1")
    assert (running.status, running.attempts, running.created_at) == (
        Status.IN_PROGRESS,
        1,
        pending.created_at,
    )


def test_a_pending_record_is_not_taken_by_another_payload(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    store.put_pending(_claim(), retention=RETENTION)

    answer = store.acquire(_claim(payload_hash="hash-b"), lease=LEASE, retention=RETENTION)

    assert answer == PayloadMismatch(job_id="job-1")


def test_a_pending_write_never_replaces_a_record_in_another_state(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    claim = _claim()
    lease = store.acquire(claim, lease=LEASE, retention=RETENTION)
    assert isinstance(lease, Acquired)
    store.complete(claim.key, lease.token, result='"done"', result_omitted=None, retention=RETENTION)

    assert store.put_pending(claim, retention=RETENTION) is False
    assert _found(store, "job-1").status is Status.COMPLETED


def test_cancelling_a_pending_job_makes_the_lease_refuse_it(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    claim = _claim()
    store.put_pending(claim, retention=RETENTION)

    cancellation = store.cancel("job-1", retention=RETENTION)

    assert cancellation.outcome is CancelOutcome.CANCELLED
    assert cancellation.record is not None
    assert cancellation.record.status is Status.CANCELLED
    assert store.acquire(claim, lease=LEASE, retention=RETENTION) == AlreadyCancelled(job_id="job-1")
    assert store.cancel("job-1", retention=RETENTION).outcome is CancelOutcome.ALREADY_FINISHED


def test_cancelling_a_running_job_is_reported_by_its_next_renewal_and_settled_cancelled(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    claim = _claim()
    lease = store.acquire(claim, lease=LEASE, retention=RETENTION)
    assert isinstance(lease, Acquired)
    assert store.renew(claim.key, lease.token, lease=LEASE).is_cancel_requested is False

    cancellation = store.cancel("job-1", retention=RETENTION)

    assert cancellation.outcome is CancelOutcome.REQUESTED
    assert cancellation.record is not None
    assert cancellation.record.cancel_requested_at is not None
    assert store.renew(claim.key, lease.token, lease=LEASE, progress=40).is_cancel_requested is True
    store.finish_cancelled(claim.key, lease.token)
    assert _found(store, "job-1").status is Status.CANCELLED
    with pytest.raises(LeaseLostError):
        store.finish_cancelled(claim.key, lease.token)


def test_a_cancel_requested_record_is_not_taken_over_when_its_lease_lapses(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    claim = _claim()
    short = timedelta(milliseconds=200)
    assert isinstance(store.acquire(claim, lease=short, retention=RETENTION), Acquired)
    assert store.cancel("job-1", retention=RETENTION).outcome is CancelOutcome.REQUESTED
    record = _found(store, "job-1")
    assert record.lease_expires_at is not None
    lapsed_at = lapse_after(record.lease_expires_at, clock_skew=SKEW)
    while datetime.now(UTC) <= lapsed_at:  # a real lease: wait out its end (well under a second)
        time.sleep(0.05)

    assert store.acquire(claim, lease=LEASE, retention=RETENTION) == AlreadyCancelled(job_id="job-1")


def test_a_job_without_a_record_gets_a_marker(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    assert store.is_marked_cancelled("job-9") is False

    assert store.cancel("job-9", retention=RETENTION).outcome is CancelOutcome.MARKED
    assert store.cancel("job-9", retention=RETENTION).outcome is CancelOutcome.MARKED

    assert store.is_marked_cancelled("job-9") is True
    assert store.is_marked_cancelled("job-8") is False
    assert store.find("job-9") is None  # a marker is not a record


def test_the_markers_of_a_batch_are_found_with_one_request(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    job_ids = [f"job-{n}" for n in range(150)]  # past BatchGetItem's hundred keys
    for job_id in ("job-3", "job-120"):
        assert store.cancel(job_id, retention=RETENTION).outcome is CancelOutcome.MARKED

    assert store.marked_cancelled(job_ids) == {"job-3", "job-120"}
    assert store.marked_cancelled([]) == set()
    expiry = store.cancel_marker_expiry("job-3")
    assert expiry is not None
    assert store.cancel_marker_expiry("job-4") is None


def test_a_duplicate_pending_write_points_the_duplicate_at_the_live_record(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    assert store.put_pending(_claim("job-1"), retention=RETENTION) is True
    duplicate = dataclasses.replace(_claim("job-1"), job_id="job-2")  # same key, another job
    assert store.put_pending(duplicate, retention=RETENTION) is False

    record = store.find_through_alias("job-2")

    assert record is not None
    assert (record.job_id, record.status) == ("job-1", Status.PENDING)
    assert store.find_through_alias("job-1") is None  # the first job is found directly
    assert store.find_through_alias("job-3") is None


def test_a_scheduled_pending_record_keeps_its_due_time_and_lives_past_it(
    store: MemoryIdempotencyStore | DynamoDbIdempotencyStore,
) -> None:
    due_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)

    assert store.put_pending(dataclasses.replace(_claim(), due_at=due_at), retention=RETENTION) is True

    pending = _found(store, "job-1")
    assert pending.status is Status.PENDING
    assert pending.due_at == due_at
    assert pending.expires_at >= due_at + RETENTION - timedelta(seconds=1)
