"""The DynamoDB limiter over HTTP: rate budgets and concurrency slots on moto's server and on
DynamoDB Local (which also checks every expression placeholder), and racing takers on DynamoDB Local
(moto does not serialise concurrent conditional writes to one item)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.idempotency.dynamodb_items import utc_now
from cloudjobs.limits import RateLimit
from cloudjobs.limits.base import Granted, RateExceeded, Slot, SlotsFull
from cloudjobs.limits.dynamodb import DynamoDbLimiter
from cloudjobs.provisioning import TableSpec, delete_table, provision_table
from tests.dynamodb_local import DynamoDbLocal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

HOUR = timedelta(hours=1)
DEAD = timedelta(seconds=-30)
"""A lease that ended before it was taken: its holder died long ago."""


def _limiter(store: DynamoDbIdempotencyStore) -> DynamoDbLimiter:
    return DynamoDbLimiter(store.table, client=lambda: store.client)


def _count_updates(client: DynamoDBClient) -> list[str]:
    calls: list[str] = []

    def count(**_: Any) -> None:
        calls.append("UpdateItem")

    client.meta.events.register("before-call.dynamodb.UpdateItem", count)
    return calls


def test_a_rate_budget_grants_its_burst_then_says_when_the_next_start_fits(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    limiter = _limiter(dynamodb_store)
    rate = RateLimit(3, timedelta(minutes=1))
    before = utc_now()

    answers = [limiter.take("#limit#rate#send", rate) for _ in range(4)]

    assert answers[:3] == [Granted()] * 3
    refused = answers[3]
    assert isinstance(refused, RateExceeded)
    # Three starts spent 60 s of budget at 20 s each; the fourth fits 20 s after the first.
    assert before + timedelta(seconds=19) <= refused.retry_at <= utc_now() + timedelta(seconds=21)
    assert limiter.take("#limit#rate#send#other-key", rate) == Granted()


def test_a_start_is_one_write_and_a_second_only_when_another_process_changed_the_key(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    updates = _count_updates(dynamodb_store.client)
    first, second = _limiter(dynamodb_store), _limiter(dynamodb_store)
    rate = RateLimit(10, HOUR)

    assert first.take("#limit#rate#k", rate) == Granted()  # idle key: the idle write
    assert first.take("#limit#rate#k", rate) == Granted()  # it knows the key is busy now
    assert len(updates) == 2
    assert second.take("#limit#rate#k", rate) == Granted()  # guessed idle: refused, then busy
    assert len(updates) == 4
    assert second.take("#limit#rate#k", rate) == Granted()
    assert len(updates) == 5


def test_slots_are_limited_given_back_and_renewed(dynamodb_store: DynamoDbIdempotencyStore) -> None:
    limiter = _limiter(dynamodb_store)
    first = limiter.acquire("#limit#concurrency#export", 2, lease=HOUR)
    second = limiter.acquire("#limit#concurrency#export", 2, lease=HOUR)
    assert isinstance(first, Slot)
    assert isinstance(second, Slot)

    full = limiter.acquire("#limit#concurrency#export", 2, lease=HOUR)
    assert isinstance(full, SlotsFull)
    assert full.lapses_at >= first.expires_at

    assert limiter.renew("#limit#concurrency#export", first.token, lease=HOUR)
    limiter.release("#limit#concurrency#export", first.token)
    limiter.release("#limit#concurrency#export", first.token)  # twice: nothing to give back
    assert not limiter.renew("#limit#concurrency#export", first.token, lease=HOUR)
    assert isinstance(limiter.acquire("#limit#concurrency#export", 2, lease=HOUR), Slot)


def test_the_slot_of_a_dead_holder_is_taken_over_in_one_more_write(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    limiter = _limiter(dynamodb_store)
    dead = limiter.acquire("#limit#concurrency#export", 1, lease=DEAD)
    assert isinstance(dead, Slot)
    updates = _count_updates(dynamodb_store.client)

    taken = limiter.acquire("#limit#concurrency#export", 1, lease=HOUR)

    assert isinstance(taken, Slot)
    assert len(updates) == 2  # refused with the map, then the takeover
    assert not limiter.renew("#limit#concurrency#export", dead.token, lease=HOUR)  # it is gone


# -- racing takers, on DynamoDB Local --------------------------------------------------------------


@pytest.fixture
def local_store(
    dynamodb_local: DynamoDbLocal, aws_environment: dict[str, str]
) -> Iterator[DynamoDbIdempotencyStore]:
    client: DynamoDBClient = boto3.session.Session().client(
        "dynamodb", endpoint_url=dynamodb_local.endpoint_url
    )
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    yield DynamoDbIdempotencyStore(spec.name, client=client, max_pool_connections=32)
    delete_table(spec, client=client)
    client.close()


def _race(racers: int, action: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(racers)
    answers: list[object] = []
    lock = threading.Lock()

    def race() -> None:
        barrier.wait()
        answer = action()
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == racers
    return answers


def test_racing_takers_on_dynamodb_local_never_spend_more_than_the_budget(
    local_store: DynamoDbIdempotencyStore,
) -> None:
    rate = RateLimit(5, HOUR)
    # Each racer is its own process's limiter: none knows the key's state.
    answers = _race(16, lambda: _limiter(local_store).take("#limit#rate#race", rate))

    assert sum(1 for answer in answers if isinstance(answer, Granted)) == 5


@pytest.mark.parametrize("dead_holders", [0, 3], ids=["fresh", "dead-holders"])
def test_racing_takers_on_dynamodb_local_never_hold_more_slots_than_the_limit(
    local_store: DynamoDbIdempotencyStore, dead_holders: int
) -> None:
    for _ in range(dead_holders):
        assert isinstance(_limiter(local_store).acquire("#limit#concurrency#race", 3, lease=DEAD), Slot)

    answers = _race(16, lambda: _limiter(local_store).acquire("#limit#concurrency#race", 3, lease=HOUR))

    assert sum(1 for answer in answers if isinstance(answer, Slot)) == 3
    assert all(isinstance(answer, Slot | SlotsFull) for answer in answers)
