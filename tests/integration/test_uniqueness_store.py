"""Unique-job reservations on DynamoDB over HTTP, on moto's server and on DynamoDB Local (which also
checks every expression placeholder): each write of the reservation's life and what it answers."""

from __future__ import annotations

import time
from datetime import timedelta

from cloudjobs.idempotency.base import Claim, Status, payload_hash, store_key
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.uniqueness.state import Held, ReservationState, Reserved, UniqueClaim, unique_item_key

RETENTION = timedelta(days=1)


def _claim(
    job_id: str, *, window: timedelta = timedelta(minutes=10), record_key: str | None = None
) -> UniqueClaim:
    return UniqueClaim(
        key=unique_item_key("sync", "acct-7"),
        job_id=job_id,
        job_type="sync",
        window=window,
        reservation=timedelta(seconds=30),
        record_key=record_key,
    )


def test_a_reservation_is_reserved_confirmed_and_answers_repeats_with_its_job(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    first = dynamodb_store.reserve(_claim("job-1", record_key="sync#job-1"))
    assert isinstance(first, Reserved)
    held_while_sending = dynamodb_store.reserve(_claim("job-2"))
    confirmed = dynamodb_store.confirm_reservation(_claim("job-1").key, first.token)
    held_after = dynamodb_store.reserve(_claim("job-3"))

    assert isinstance(held_while_sending, Held)
    assert (held_while_sending.job_id, held_while_sending.state) == ("job-1", ReservationState.RESERVED)
    assert held_while_sending.token == first.token
    assert confirmed is True
    assert isinstance(held_after, Held)
    assert (held_after.job_id, held_after.state, held_after.token) == ("job-1", ReservationState.SENT, None)
    assert held_after.record_key == "sync#job-1"
    # A confirm with a token that no longer holds the reservation is refused.
    assert dynamodb_store.confirm_reservation(_claim("job-1").key, first.token) is False


def test_a_released_reservation_is_taken_over_under_its_job_id(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    first = dynamodb_store.reserve(_claim("job-1"))
    assert isinstance(first, Reserved)
    dynamodb_store.release_reservation(_claim("job-1").key, first.token)
    held = dynamodb_store.reserve(_claim("job-2"))
    assert isinstance(held, Held)
    assert held.state is ReservationState.RELEASED

    taken = dynamodb_store.take_over(_claim("job-1"), held)
    again = dynamodb_store.take_over(_claim("job-1"), held)  # the same seen token: refused

    assert isinstance(taken, Reserved)
    assert (taken.job_id, taken.is_takeover) == ("job-1", True)
    assert isinstance(again, Held)
    assert again.token == taken.token


def test_a_live_reservation_is_not_taken_over(dynamodb_store: DynamoDbIdempotencyStore) -> None:
    first = dynamodb_store.reserve(_claim("job-1"))
    assert isinstance(first, Reserved)
    held = dynamodb_store.reserve(_claim("job-2"))
    assert isinstance(held, Held)

    refused = dynamodb_store.take_over(_claim("job-1"), held)

    assert isinstance(refused, Held)
    assert refused.token == first.token


def test_a_sent_reservation_is_replaced_only_when_its_job_is_named(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    first = dynamodb_store.reserve(_claim("job-1"))
    assert isinstance(first, Reserved)
    assert dynamodb_store.confirm_reservation(_claim("job-1").key, first.token)

    wrong = dynamodb_store.reserve(_claim("job-2"), replacing="another-job")
    replaced = dynamodb_store.reserve(_claim("job-2"), replacing="job-1")

    assert isinstance(wrong, Held)
    assert isinstance(replaced, Reserved)
    assert (replaced.job_id, replaced.is_takeover) == ("job-2", False)


def test_a_window_over_frees_the_key(dynamodb_store: DynamoDbIdempotencyStore) -> None:
    first = dynamodb_store.reserve(_claim("job-1", window=timedelta(milliseconds=200)))
    assert isinstance(first, Reserved)
    assert dynamodb_store.confirm_reservation(_claim("job-1").key, first.token)
    deadline = time.monotonic() + 10
    answer = dynamodb_store.reserve(_claim("job-2"))
    while isinstance(answer, Held) and time.monotonic() < deadline:
        answer = dynamodb_store.reserve(_claim("job-2"))

    assert isinstance(answer, Reserved)
    assert answer.job_id == "job-2"


def test_get_record_reads_a_live_record_by_key_and_nothing_else(
    dynamodb_store: DynamoDbIdempotencyStore,
) -> None:
    key = store_key("export", "job-1")
    claim = Claim(key=key, job_id="job-1", job_type="export", payload_hash=payload_hash("export", {}))
    assert dynamodb_store.put_pending(claim, retention=RETENTION)
    reservation = dynamodb_store.reserve(_claim("job-9"))
    assert isinstance(reservation, Reserved)

    record = dynamodb_store.get_record(key)

    assert record is not None
    assert (record.job_id, record.status) == ("job-1", Status.PENDING)
    assert dynamodb_store.get_record(store_key("export", "absent")) is None
    assert dynamodb_store.get_record(_claim("job-9").key) is None  # a reservation is not a record
