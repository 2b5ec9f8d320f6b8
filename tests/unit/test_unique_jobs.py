"""Unique jobs on the memory backend and store: one job per key and window, reserve → send → confirm."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import timedelta

import pytest

from cloudjobs import (
    BackendError,
    CloudJobs,
    InvalidUniquenessError,
    JobHandle,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    Settings,
)
from cloudjobs.backends.base import OutgoingMessage, SendResult
from cloudjobs.envelope import decode
from cloudjobs.idempotency.base import Status
from cloudjobs.uniqueness.state import Held, ReservationState, UniqueClaim, unique_item_key

RESERVATION = timedelta(seconds=5)
SKEW = timedelta(seconds=2)


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock, clock_skew=SKEW)


@pytest.fixture
def app(backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore) -> CloudJobs:
    jobs = CloudJobs(
        settings=Settings(_env_file=None, unique_reservation_seconds=RESERVATION.total_seconds()),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=store,
    )

    @jobs.job("sync-contacts")
    def sync(payload: dict[str, str]) -> str:
        return payload["account"]

    return jobs


def _sent_ids(backend: MemoryBackend) -> list[str]:
    return [decode(message.body).id for message in backend.messages()]


def test_a_repeat_within_the_window_returns_the_first_job_id_and_sends_nothing(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock
) -> None:
    first = app.enqueue(
        "sync-contacts", {"account": "7"}, unique_for=timedelta(minutes=10), unique_key="acct-7"
    )
    clock.advance(timedelta(minutes=9))
    repeat = app.enqueue(
        "sync-contacts", {"account": "7"}, unique_for=timedelta(minutes=10), unique_key="acct-7"
    )

    assert repeat == first
    assert _sent_ids(backend) == [first]


def test_after_the_window_a_new_job_is_sent(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock
) -> None:
    first = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    clock.advance(timedelta(minutes=10, seconds=1))
    second = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")

    assert second != first
    assert _sent_ids(backend) == [first, second]


def test_keys_are_per_job_type_and_default_to_the_payload(app: CloudJobs, backend: MemoryBackend) -> None:
    a = app.enqueue("sync-contacts", {"account": "7"}, unique_for=60)
    same_payload = app.enqueue("sync-contacts", {"account": "7"}, unique_for=60)
    other_payload = app.enqueue("sync-contacts", {"account": "8"}, unique_for=60)
    other_type = app.enqueue("other-type", {"account": "7"}, unique_for=60)

    assert same_payload == a
    assert len({a, other_payload, other_type}) == 3
    assert len(backend.messages()) == 3


def test_concurrent_enqueues_of_one_key_send_one_job(app: CloudJobs, backend: MemoryBackend) -> None:
    barrier = threading.Barrier(20)
    ids: list[str] = []
    lock = threading.Lock()

    def enqueue() -> None:
        barrier.wait()
        job_id = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
        with lock:
            ids.append(job_id)

    threads = [threading.Thread(target=enqueue) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == 20
    assert set(ids) == set(_sent_ids(backend))
    assert len(backend.messages()) == 1


class _FailingOnce(MemoryBackend):
    def __init__(self, clock: ManualClock) -> None:
        super().__init__("jobs", clock=clock)
        self.failures = 1

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if self.failures:
            self.failures -= 1
            raise BackendError("the queue is down", queue="jobs")
        return super().send(messages)


def test_a_send_that_fails_releases_the_reservation_for_the_next_enqueue(
    clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    backend = _FailingOnce(clock)
    app = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock, idempotency_store=store)

    with pytest.raises(BackendError):
        app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    # No wait for the reservation timeout: the failure released it; the job id is the reserved one.
    job_id = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")

    assert _sent_ids(backend) == [job_id]


def test_a_reservation_never_confirmed_is_taken_over_after_its_timeout(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    # A producer that died between its reservation and its send: the reservation stands unconfirmed.
    crashed = UniqueClaim(
        key=unique_item_key("sync-contacts", "acct-7"),
        job_id="crashed-job",
        job_type="sync-contacts",
        window=timedelta(minutes=10),
        reservation=RESERVATION,
    )
    store.reserve(crashed)

    within = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    assert within == "crashed-job"
    assert backend.messages() == []

    clock.advance(RESERVATION + SKEW + timedelta(seconds=1))
    after = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")

    assert after == "crashed-job"  # sent under the reserved id: a send the dead producer made is a duplicate
    assert _sent_ids(backend) == ["crashed-job"]
    again = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    assert again == "crashed-job"
    assert len(backend.messages()) == 1


def test_a_confirmed_reservation_is_never_taken_over_within_the_window(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    first = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    clock.advance(RESERVATION * 10)

    assert app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7") == first
    assert len(backend.messages()) == 1


def test_unique_until_finished_frees_the_key_once_the_first_job_succeeded(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore
) -> None:
    first = app.enqueue(
        "sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7", unique_until="finished"
    )
    running = app.enqueue(
        "sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7", unique_until="finished"
    )
    assert running == first  # pending: still the window's job

    app.drain()
    assert [record.status for record in store.records()] == [Status.COMPLETED]
    second = app.enqueue(
        "sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7", unique_until="finished"
    )

    assert second != first
    assert app.result(first, timeout=0) == "7"
    assert [decode(message.body).id for message in backend.messages()] == [second]


def test_unique_until_window_keeps_the_key_after_the_job_finished(app: CloudJobs) -> None:
    first = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    app.drain()

    assert app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7") == first


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"unique_key": "acct-7"}, "unique_for"),
        ({"unique_until": "finished"}, "unique_for"),
        ({"unique_for": 0}, "unique_for"),
        ({"unique_for": timedelta(days=367)}, "unique_for"),
        ({"unique_for": "10m"}, "unique_for"),
        ({"unique_for": 60, "unique_key": ""}, "unique_key"),
        ({"unique_for": 60, "unique_until": "forever"}, "unique_until"),
    ],
)
def test_a_unique_job_asked_wrongly_is_refused_before_anything_is_written(
    app: CloudJobs,
    backend: MemoryBackend,
    store: MemoryIdempotencyStore,
    options: dict[str, object],
    setting: str,
) -> None:
    with pytest.raises(InvalidUniquenessError) as refused:
        app.enqueue("sync-contacts", {"account": "7"}, **options)  # type: ignore[arg-type]

    assert refused.value.setting == setting
    assert refused.value.job_name == "sync-contacts"
    assert backend.messages() == []
    assert store.requests == 0


def test_the_store_holds_one_reservation_in_the_sent_state(
    app: CloudJobs, store: MemoryIdempotencyStore
) -> None:
    job_id = app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7")
    claim = UniqueClaim(
        key=unique_item_key("sync-contacts", "acct-7"),
        job_id="another",
        job_type="sync-contacts",
        window=timedelta(minutes=10),
        reservation=RESERVATION,
    )

    held = store.reserve(claim)

    assert isinstance(held, Held)
    assert held.state is ReservationState.SENT
    assert held.job_id == job_id


def test_enqueue_async_takes_the_unique_keywords(app: CloudJobs, backend: MemoryBackend) -> None:
    async def twice() -> list[str]:
        return [
            await app.enqueue_async("sync-contacts", {"account": "7"}, unique_for=600, unique_key="k"),
            await app.enqueue_async("sync-contacts", {"account": "7"}, unique_for=600, unique_key="k"),
        ]

    first, second = asyncio.run(twice())

    assert first == second
    assert len(backend.messages()) == 1


def test_the_job_handle_takes_the_unique_keywords(app: CloudJobs, backend: MemoryBackend) -> None:
    handle: JobHandle[dict[str, str], str] = JobHandle(app, app.registry["sync-contacts"])
    first = handle.enqueue({"account": "7"}, unique_for=600, unique_key="k")

    assert handle.enqueue({"account": "7"}, unique_for=600, unique_key="k") == first
    assert len(backend.messages()) == 1


def test_a_reservation_past_its_timeout_but_within_the_clock_skew_allowance_is_not_taken_over(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    crashed = UniqueClaim(
        key=unique_item_key("sync-contacts", "acct-7"),
        job_id="crashed-job",
        job_type="sync-contacts",
        window=timedelta(minutes=10),
        reservation=RESERVATION,
    )
    store.reserve(crashed)
    clock.advance(RESERVATION + SKEW / 2)

    assert (
        app.enqueue("sync-contacts", {"account": "7"}, unique_for=600, unique_key="acct-7") == "crashed-job"
    )
    assert backend.messages() == []


def test_a_payload_without_canonical_json_needs_a_unique_key(app: CloudJobs, backend: MemoryBackend) -> None:
    with pytest.raises(InvalidUniquenessError) as refused:
        app.enqueue("elsewhere", {"ratio": float("nan")}, unique_for=60)

    assert refused.value.setting == "unique_key"
    assert backend.messages() == []
