"""The idempotency store's contract, on the memory store and on DynamoDB over HTTP.

The DynamoDB store runs against moto's server and against Amazon's DynamoDB Local, which rejects
expressions moto accepts (an unused or undefined placeholder): a store that passes only on moto is
not done. Leases here are short real durations; waits poll with a deadline.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cloudjobs import IdempotencyStoreError, LeaseLostError
from cloudjobs.idempotency.base import (
    Acquired,
    AcquireResult,
    AlreadyCompleted,
    Claim,
    IdempotencyStore,
    InProgress,
    PayloadMismatch,
    Status,
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
CLAIM = Claim(key="charge#order-42", job_id="job-1", job_type="charge", payload_hash="hash-a")


@pytest.fixture(params=["memory", "moto", "dynamodb-local"])
def store(request: pytest.FixtureRequest) -> Iterator[IdempotencyStore]:
    """The memory store, then the DynamoDB store on moto's server and on DynamoDB Local."""
    if request.param == "memory":
        yield MemoryIdempotencyStore(clock_skew=SKEW)
        return
    endpoint_url = dynamodb_endpoint(request.param, request)
    client: DynamoDBClient = boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url)
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    yield DynamoDbIdempotencyStore(spec.name, client=client, clock_skew=SKEW)
    delete_table(spec, client=client)
    client.close()


def _acquired(answer: AcquireResult) -> Acquired:
    assert isinstance(answer, Acquired), answer
    return answer


def _eventually(answer: Callable[[], AcquireResult], *, seconds: float = 10) -> AcquireResult:
    """Call ``answer`` until it is Acquired; fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        result = answer()
        if isinstance(result, Acquired) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_the_first_acquire_takes_the_lease_and_the_next_learns_when_it_lapses(
    store: IdempotencyStore,
) -> None:
    before = datetime.now(UTC)
    first = _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    second = store.acquire(CLAIM, lease=LEASE, retention=RETENTION)

    assert isinstance(second, InProgress)
    assert second.job_id == "job-1"
    assert before + LEASE + SKEW <= second.available_at + timedelta(milliseconds=5)
    assert second.available_at <= first.lease_expires_at + SKEW + timedelta(milliseconds=5)


def test_a_completed_key_answers_with_its_stored_result(store: IdempotencyStore) -> None:
    lease = _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    store.complete(CLAIM.key, lease.token, result='{"charged":5}', result_omitted=None, retention=RETENTION)

    again = store.acquire(CLAIM, lease=LEASE, retention=RETENTION)

    assert again == AlreadyCompleted(job_id="job-1", result='{"charged":5}')
    record = store.find("job-1")
    assert record is not None
    assert (record.status, record.progress, record.attempts) == (Status.COMPLETED, 100, 1)
    assert record.lease_expires_at is None


def test_a_result_not_stored_keeps_its_reason(store: IdempotencyStore) -> None:
    lease = _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    store.complete(CLAIM.key, lease.token, result=None, result_omitted="too large", retention=RETENTION)

    assert store.acquire(CLAIM, lease=LEASE, retention=RETENTION) == AlreadyCompleted(
        job_id="job-1", result=None, result_omitted="too large"
    )


@pytest.mark.parametrize("completed", [False, True], ids=["in-progress", "completed"])
def test_a_key_reused_with_another_payload_is_a_mismatch(store: IdempotencyStore, completed: bool) -> None:
    lease = _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    if completed:
        store.complete(CLAIM.key, lease.token, result=None, result_omitted=None, retention=RETENTION)
    other = Claim(key=CLAIM.key, job_id="job-2", job_type="charge", payload_hash="hash-b")

    assert store.acquire(other, lease=LEASE, retention=RETENTION) == PayloadMismatch(job_id="job-1")


def test_a_released_lease_is_taken_again_keeping_attempts_and_the_error(store: IdempotencyStore) -> None:
    lease = _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    store.renew(CLAIM.key, lease.token, lease=LEASE, progress=30)
    store.release(CLAIM.key, lease.token, error="ConnectionError: reset", is_final=False)

    retry = Claim(key=CLAIM.key, job_id="job-1b", job_type="charge", payload_hash="hash-a")
    _acquired(store.acquire(retry, lease=LEASE, retention=RETENTION))

    record = store.find("job-1")
    assert record is not None
    assert (record.status, record.attempts, record.progress) == (Status.IN_PROGRESS, 2, 30)
    assert record.error == "ConnectionError: reset"
    assert store.find("job-1b") is None  # the record keeps the first job's id


def test_a_dead_lettered_record_may_be_taken_again_by_a_redrive(store: IdempotencyStore) -> None:
    lease = _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    store.release(CLAIM.key, lease.token, error="PermanentError: no", is_final=True)
    record = store.find("job-1")
    assert record is not None
    assert record.status is Status.DEAD_LETTERED

    _acquired(store.acquire(CLAIM, lease=LEASE, retention=RETENTION))


def test_a_lapsed_lease_is_taken_over_and_the_old_token_is_refused(store: IdempotencyStore) -> None:
    short = timedelta(milliseconds=400)
    old = _acquired(store.acquire(CLAIM, lease=short, retention=RETENTION))
    store.renew(CLAIM.key, old.token, lease=short, progress=60)
    assert isinstance(store.acquire(CLAIM, lease=LEASE, retention=RETENTION), InProgress)

    new = _acquired(_eventually(lambda: store.acquire(CLAIM, lease=LEASE, retention=RETENTION)))

    assert new.token != old.token
    with pytest.raises(LeaseLostError):
        store.renew(CLAIM.key, old.token, lease=LEASE)
    with pytest.raises(LeaseLostError):
        store.complete(CLAIM.key, old.token, result=None, result_omitted=None, retention=RETENTION)
    with pytest.raises(LeaseLostError):
        store.release(CLAIM.key, old.token, error="late", is_final=False)
    record = store.find("job-1")
    assert record is not None
    # An UpdateItem, not a PutItem: the takeover kept what the record had.
    assert (record.attempts, record.progress, record.status) == (2, 60, Status.IN_PROGRESS)


def test_a_renewed_lease_is_not_taken_over(store: IdempotencyStore) -> None:
    lease = _acquired(store.acquire(CLAIM, lease=timedelta(seconds=1), retention=RETENTION))
    store.renew(CLAIM.key, lease.token, lease=LEASE)

    answer = store.acquire(CLAIM, lease=LEASE, retention=RETENTION)

    assert isinstance(answer, InProgress)
    assert answer.available_at > datetime.now(UTC) + LEASE - timedelta(seconds=5)


def test_an_expired_record_counts_as_absent_and_is_not_found(store: IdempotencyStore) -> None:
    # The record's expiry is kept in whole epoch seconds (what DynamoDB TTL reads): a retention of
    # one second can run out a moment after the write. Three leave at least two for the next check.
    retention = timedelta(seconds=3)
    lease = _acquired(store.acquire(CLAIM, lease=timedelta(milliseconds=100), retention=retention))
    store.complete(CLAIM.key, lease.token, result="1", result_omitted=None, retention=retention)
    assert isinstance(store.acquire(CLAIM, lease=LEASE, retention=RETENTION), AlreadyCompleted)

    # TTL deletion is lazy (local servers never delete): expiry is checked by the store itself.
    _acquired(_eventually(lambda: store.acquire(CLAIM, lease=LEASE, retention=RETENTION)))


def test_find_returns_none_for_an_unknown_job(store: IdempotencyStore) -> None:
    assert store.find("no-such-job") is None


# -- DynamoDB only ------------------------------------------------------------------------------------


def test_a_duplicate_costs_one_write_and_no_read(dynamodb_store: DynamoDbIdempotencyStore) -> None:
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    dynamodb_store.client.meta.events.register("before-call.dynamodb", count)
    lease = _acquired(dynamodb_store.acquire(CLAIM, lease=LEASE, retention=RETENTION))
    dynamodb_store.complete(CLAIM.key, lease.token, result="1", result_omitted=None, retention=RETENTION)
    assert calls == Counter({"UpdateItem": 2})

    calls.clear()
    assert isinstance(dynamodb_store.acquire(CLAIM, lease=LEASE, retention=RETENTION), AlreadyCompleted)
    assert isinstance(
        dynamodb_store.acquire(
            Claim(CLAIM.key, "job-9", "charge", "hash-z"), lease=LEASE, retention=RETENTION
        ),
        PayloadMismatch,
    )
    assert calls == Counter({"UpdateItem": 2})


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_endpoint_raises_a_store_error(aws_environment: dict[str, str]) -> None:
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=f"http://127.0.0.1:{_closed_port()}"
    )
    store = DynamoDbIdempotencyStore("jobs-idempotency", client=client)

    with pytest.raises(IdempotencyStoreError) as raised:
        store.acquire(CLAIM, lease=LEASE, retention=RETENTION)

    assert raised.value.table == "jobs-idempotency"
    assert "unreachable" in str(raised.value)


def test_a_missing_table_raises_a_store_error_naming_it(dynamodb_client: DynamoDBClient) -> None:
    store = DynamoDbIdempotencyStore("no-such-table", client=dynamodb_client)

    with pytest.raises(IdempotencyStoreError) as raised:
        store.acquire(CLAIM, lease=LEASE, retention=RETENTION)

    assert raised.value.code == "ResourceNotFoundException"
    assert "'no-such-table'" in str(raised.value)
