"""Schedule records on DynamoDB over HTTP: claims, settles and refusals on moto's server and on
DynamoDB Local (which also checks every expression placeholder), and concurrent claims of one tick
on DynamoDB Local (moto does not serialise concurrent conditional writes to one item)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
import pytest

from cloudjobs.errors import LeaseLostError
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.provisioning import TableSpec, delete_table, provision_table
from cloudjobs.scheduling.state import ScheduleState, TickClaim, TickState
from tests.dynamodb_local import DynamoDbLocal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

TICK = datetime(2026, 6, 1, 12, 0, 2, tzinfo=UTC)
LEASE = timedelta(seconds=10)


def test_a_first_claim_settles_into_a_record_with_the_last_fire(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    assert dynamodb_store.schedule_state("nightly") is None

    claim = dynamodb_store.claim_tick("nightly", TICK, seen=None, lease=LEASE, owner="host:1")
    assert isinstance(claim, TickClaim)
    firing = dynamodb_store.schedule_state("nightly")
    settled = dynamodb_store.settle_tick(claim, TickState.FIRED, job_id="schedule:nightly@x")

    assert firing is not None
    assert (firing.tick, firing.tick_state, firing.owner) == (TICK, TickState.FIRING, "host:1")
    assert firing.lease_expires_at is not None
    assert (settled.tick_state, settled.last_fired_tick, settled.last_job_id) == (
        TickState.FIRED,
        TICK,
        "schedule:nightly@x",
    )
    assert settled.lease_expires_at is None
    assert settled.version == firing.version + 1
    assert dynamodb_store.schedule_state("nightly") == settled


def test_a_claim_over_a_record_that_changed_is_refused_with_the_record(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    claim = dynamodb_store.claim_tick("nightly", TICK, seen=None, lease=LEASE, owner="a")
    assert isinstance(claim, TickClaim)
    seen = dynamodb_store.schedule_state("nightly")
    settled = dynamodb_store.settle_tick(claim, TickState.SKIPPED)

    stale = dynamodb_store.claim_tick(
        "nightly", TICK + timedelta(seconds=2), seen=seen, lease=LEASE, owner="b"
    )
    absent = dynamodb_store.claim_tick(
        "nightly", TICK + timedelta(seconds=2), seen=None, lease=LEASE, owner="b"
    )
    backwards = dynamodb_store.claim_tick(
        "nightly", TICK - timedelta(seconds=2), seen=settled, lease=LEASE, owner="b"
    )

    assert stale == settled
    assert absent == settled
    assert backwards == settled
    assert settled.last_job_id is None


def test_a_claim_keeps_the_last_fire_and_a_lost_claim_cannot_settle(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    first = dynamodb_store.claim_tick("nightly", TICK, seen=None, lease=LEASE, owner="a")
    assert isinstance(first, TickClaim)
    fired = dynamodb_store.settle_tick(first, TickState.FIRED, job_id="job-1")
    second = dynamodb_store.claim_tick(
        "nightly", TICK + timedelta(seconds=2), seen=fired, lease=LEASE, owner="a"
    )
    assert isinstance(second, TickClaim)
    seen = dynamodb_store.schedule_state("nightly")
    assert seen is not None
    # The lease lapsed and another scheduler claimed the same tick again.
    retaken = dynamodb_store.claim_tick("nightly", second.tick, seen=seen, lease=LEASE, owner="b")
    assert isinstance(retaken, TickClaim)

    with pytest.raises(LeaseLostError):
        dynamodb_store.settle_tick(second, TickState.FIRED, job_id="job-2")
    record = dynamodb_store.settle_tick(retaken, TickState.FAILED)

    assert (record.tick, record.tick_state, record.owner) == (second.tick, TickState.FAILED, "b")
    assert (record.last_fired_tick, record.last_job_id) == (TICK, "job-1")


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


@pytest.mark.parametrize("seen_first", [False, True], ids=["first-tick", "next-tick"])
def test_threads_racing_to_claim_one_tick_on_dynamodb_local_let_exactly_one_win(
    local_store: DynamoDbIdempotencyStore, seen_first: bool
) -> None:
    seen: ScheduleState | None = None
    if seen_first:
        claim = local_store.claim_tick("race", TICK - timedelta(seconds=2), seen=None, lease=LEASE, owner="x")
        assert isinstance(claim, TickClaim)
        seen = local_store.settle_tick(claim, TickState.FIRED, job_id="job-0")
    racers = 12
    barrier = threading.Barrier(racers)
    answers: list[TickClaim | ScheduleState] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        barrier.wait()
        answer = local_store.claim_tick("race", TICK, seen=seen, lease=LEASE, owner=f"racer:{index}")
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    winners = [answer for answer in answers if isinstance(answer, TickClaim)]
    assert len(answers) == racers
    assert len(winners) == 1
    record = local_store.schedule_state("race")
    assert record is not None
    assert (record.tick, record.tick_state) == (TICK, TickState.FIRING)
    # Every loser learnt the winner's claim from its refusal, with no read.
    assert {answer.owner for answer in answers if isinstance(answer, ScheduleState)} == {record.owner}
