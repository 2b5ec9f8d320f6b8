"""The cancellation register on DynamoDB over HTTP (moto's server, then DynamoDB Local): consumers
learn of markers from one item read at most once per refresh interval, and ``cancel`` waits that
interval out, so a batch checked after ``cancel`` returned sees its marker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from cloudjobs.idempotency.base import CancelOutcome
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.idempotency.dynamodb_control import DynamoDbJobControl
from cloudjobs.idempotency.dynamodb_register import MARGIN, REGISTER_KEY, CancellationRegister
from cloudjobs.provisioning import TableSpec

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

RETENTION = timedelta(days=1)
REFRESH = timedelta(milliseconds=100)


def _count_requests(client: DynamoDBClient) -> Counter[str]:
    """Every request ``client`` sends from now on, by operation."""
    sent: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        sent[model.name] += 1

    client.meta.events.register("before-call.dynamodb", count)
    return sent


def _register_item(client: DynamoDBClient, table: str) -> dict[str, Any]:
    return dict(
        client.get_item(TableName=table, Key={"pk": {"S": REGISTER_KEY}}, ConsistentRead=True)["Item"]
    )


def test_a_batch_checked_after_cancel_returned_sees_the_marker(
    dynamodb_client: DynamoDBClient, make_table: Callable[[], TableSpec]
) -> None:
    table = make_table().name
    consumer = DynamoDbIdempotencyStore(table, client=dynamodb_client, cancel_refresh=REFRESH)
    operator = DynamoDbIdempotencyStore(table, client=dynamodb_client, cancel_refresh=REFRESH)
    assert consumer.marked_cancelled(["job-1", "job-2"]) == set()  # the consumer has read the register

    assert operator.cancel("job-1", retention=RETENTION).outcome is CancelOutcome.MARKED

    # The consumer's read is now older than the refresh interval: the next batch reads it again.
    assert consumer.marked_cancelled(["job-1", "job-2"]) == {"job-1"}
    assert consumer.is_marked_cancelled("job-1") is True  # the marker itself is written too


def test_batches_are_checked_with_one_read_per_refresh_interval_and_no_marker_reads(
    dynamodb_client: DynamoDBClient, make_table: Callable[[], TableSpec]
) -> None:
    table = make_table().name
    operator = DynamoDbIdempotencyStore(table, client=dynamodb_client, cancel_refresh=REFRESH)
    assert operator.cancel("job-7", retention=RETENTION).outcome is CancelOutcome.MARKED
    consumer = DynamoDbIdempotencyStore(table, client=dynamodb_client, cancel_refresh=timedelta(hours=1))
    sent = _count_requests(dynamodb_client)

    found = [
        consumer.marked_cancelled([f"job-{batch}{n}" for n in range(10)] + ["job-7"]) for batch in range(20)
    ]

    assert found == [{"job-7"}] * 20
    assert sent == Counter(GetItem=1)


def test_cancel_enters_the_marker_and_waits_out_the_refresh_interval(
    dynamodb_client: DynamoDBClient, make_table: Callable[[], TableSpec]
) -> None:
    table = make_table().name
    waits: list[float] = []
    register = CancellationRegister(
        table, client=lambda: dynamodb_client, refresh=REFRESH, sleep=waits.append
    )
    control = DynamoDbJobControl(
        table, client=lambda: dynamodb_client, clock_skew=timedelta(0), find=lambda _: None, register=register
    )
    sent = _count_requests(dynamodb_client)

    assert control.cancel("job-1", retention=RETENTION).outcome is CancelOutcome.MARKED

    assert waits == [(REFRESH + MARGIN).total_seconds()]
    # The marker (PutItem), then the register: read to prune it, then one update.
    assert sent == Counter(PutItem=1, GetItem=1, UpdateItem=1)
    assert "j#job-1" in _register_item(dynamodb_client, table)


def test_expired_entries_leave_the_register_with_the_next_cancellation(
    dynamodb_client: DynamoDBClient, make_table: Callable[[], TableSpec]
) -> None:
    table = make_table().name
    store = DynamoDbIdempotencyStore(table, client=dynamodb_client, cancel_refresh=REFRESH)
    # A retention of nothing: the marker's expiry (whole seconds) is past at once.
    assert store.cancel("job-old", retention=-timedelta(seconds=2)).outcome is CancelOutcome.MARKED
    assert "j#job-old" in _register_item(dynamodb_client, table)
    assert store.marked_cancelled(["job-old"]) == set()

    assert store.cancel("job-new", retention=RETENTION).outcome is CancelOutcome.MARKED

    entries = {name for name in _register_item(dynamodb_client, table) if name.startswith("j#")}
    assert entries == {"j#job-new"}


def test_past_its_size_the_register_is_incomplete_and_batches_read_the_markers(
    dynamodb_client: DynamoDBClient, make_table: Callable[[], TableSpec]
) -> None:
    table = make_table().name
    register = CancellationRegister(
        table, client=lambda: dynamodb_client, refresh=timedelta(0), max_entries=2, sleep=lambda _: None
    )
    control = DynamoDbJobControl(
        table, client=lambda: dynamodb_client, clock_skew=timedelta(0), find=lambda _: None, register=register
    )
    for job_id in ("job-1", "job-2"):
        control.cancel(job_id, retention=RETENTION)
    sent = _count_requests(dynamodb_client)
    assert control.marked_cancelled(["job-1", "job-3"]) == {"job-1"}
    assert sent == Counter(GetItem=1)

    control.cancel("job-3", retention=RETENTION)  # one more than the register holds

    assert "j#job-3" not in _register_item(dynamodb_client, table)
    sent.clear()
    assert control.marked_cancelled(["job-1", "job-3", "job-4"]) == {"job-1", "job-3"}
    assert sent == Counter(GetItem=1, BatchGetItem=1)  # the register says incomplete: the markers


@pytest.mark.parametrize("dynamodb_client", ["dynamodb-local"], indirect=True)
def test_concurrent_cancellations_all_enter_the_register(
    dynamodb_client: DynamoDBClient, make_table: Callable[[], TableSpec]
) -> None:
    # DynamoDB Local, not moto: it serialises concurrent writes to one item as DynamoDB does.
    table = make_table().name
    store = DynamoDbIdempotencyStore(table, client=dynamodb_client, cancel_refresh=timedelta(0))
    job_ids = [f"job-{n}" for n in range(40)]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda job_id: store.cancel(job_id, retention=RETENTION).outcome, job_ids))

    assert outcomes == [CancelOutcome.MARKED] * len(job_ids)
    assert store.marked_cancelled([*job_ids, "job-other"]) == set(job_ids)
