"""examples/payments: the handler's own conditional write closes the crash window.

The example's handler runs in a real worker over HTTP: SQS on the session's moto server, the
idempotency table and the charges table on moto's DynamoDB and on DynamoDB Local.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from cloudjobs import CloudJobs, Job, JobState, PermanentError, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec
from examples.payments import app
from tests.behaviour.conftest import running, wait_for

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@pytest.fixture
def charges_table(dynamodb_client: DynamoDBClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example's charges table, on the DynamoDB implementation under test."""
    name = f"charges-{uuid.uuid4().hex[:12]}"
    dynamodb_client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "charge_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "charge_key", "KeyType": "HASH"}],
    )
    monkeypatch.setenv("PAYMENTS_CHARGES_TABLE", name)
    monkeypatch.setattr(app, "charges_client", lambda: dynamodb_client)
    yield name
    dynamodb_client.delete_table(TableName=name)


def _payments_app(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    make_table: Callable[[], TableSpec],
    dynamodb_client: DynamoDBClient,
) -> CloudJobs:
    """A CloudJobs on a fresh queue and table, with the example's handler registered as the example does."""
    queue = make_queue(visibility_timeout_seconds=5)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, wait_time_seconds=1, heartbeat_interval_seconds=1),
        backend=make_backend(queue_url=queue.queue_url, dlq_url=queue.dlq_url),
        idempotency_store=DynamoDbIdempotencyStore(make_table().name, client=dynamodb_client),
    )
    jobs.job("charge-order", idempotency_key="order_id", max_attempts=5)(app.charge_order.__wrapped__)
    return jobs


def _charges(client: DynamoDBClient, table: str) -> list[dict[str, str]]:
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return [{name: str(next(iter(value.values()))) for name, value in item.items()} for item in items]


# Only on DynamoDB Local: the two copies are taken by two handlers at once, and moto does not serialise
# concurrent conditional writes to one item (both could take the lease there; real DynamoDB cannot).
@pytest.mark.parametrize("dynamodb_client", ["dynamodb-local"], indirect=True)
def test_an_order_enqueued_twice_is_charged_once_and_both_jobs_report_the_receipt(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    make_table: Callable[[], TableSpec],
    dynamodb_client: DynamoDBClient,
    charges_table: str,
) -> None:
    jobs = _payments_app(make_queue, make_backend, make_table, dynamodb_client)
    charge = app.Charge(order_id="o-1", amount_cents=1200)
    first, second = jobs.enqueue("charge-order", charge), jobs.enqueue("charge-order", charge)

    with running(jobs, concurrency=2):
        backend = jobs.backend
        assert isinstance(backend, SqsBackend)
        wait_for(lambda: backend.message_counts().total == 0, message="both messages acknowledged")

    rows = _charges(dynamodb_client, charges_table)
    assert len(rows) == 1
    # The record belongs to whichever job took the key first (the two may be received in any order);
    # the other one shares it and never ran.
    statuses = {job_id: jobs.status(job_id) for job_id in (first, second)}
    holders = [job_id for job_id, status in statuses.items() if status is not None]
    assert holders == [rows[0]["job_id"]]
    status = statuses[holders[0]]
    assert status is not None
    assert status.state is JobState.COMPLETED
    assert isinstance(status.result, dict)
    assert status.result["charge_id"] == rows[0]["charge_id"]


def test_a_rerun_in_the_crash_window_returns_the_first_receipt_and_writes_nothing(
    dynamodb_client: DynamoDBClient, charges_table: str
) -> None:
    # The crash window: the first run's side effect happened, its completion write did not, and the
    # redelivered message runs the handler again under the same key.
    charge = app.Charge(order_id="o-2", amount_cents=500)
    runs = [app.charge_order.__wrapped__(charge, _job("job-a", "o-2")) for _ in range(2)]

    assert runs[0] == runs[1]
    rows = _charges(dynamodb_client, charges_table)
    assert [(row["charge_id"], row["job_id"]) for row in rows] == [(runs[0].charge_id, "job-a")]


def test_a_rerun_with_another_amount_is_refused_permanently(
    dynamodb_client: DynamoDBClient, charges_table: str
) -> None:
    app.charge_order.__wrapped__(app.Charge(order_id="o-3", amount_cents=500), _job("job-b", "o-3"))
    with pytest.raises(PermanentError, match="another amount"):
        app.charge_order.__wrapped__(app.Charge(order_id="o-3", amount_cents=900), _job("job-b", "o-3"))
    assert len(_charges(dynamodb_client, charges_table)) == 1


def _job(job_id: str, order_id: str) -> Job:
    """What the handler reads of its Job (its id and key), as a consumer sets them for this job."""
    return cast("Job", SimpleNamespace(id=job_id, idempotency_key=order_id))
