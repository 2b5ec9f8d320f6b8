"""The idempotency flow in the consumer core, on memory backend and store, with a manual clock."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import (
    CloudJobs,
    Completed,
    ConfigurationError,
    DeadLetter,
    Deferred,
    Delivery,
    IdempotencyStoreError,
    Job,
    JobState,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    Retry,
    Settings,
)
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.envelope import decode
from cloudjobs.idempotency.base import (
    AcquireResult,
    Claim,
    encode_result,
    payload_hash,
    store_key,
)
from cloudjobs.idempotency.middleware import lease_for
from cloudjobs.outcomes import Outcome
from cloudjobs.runtimes.applier import OutcomeApplier

SKEW = timedelta(seconds=2)


class Charge(BaseModel):
    customer: str
    order_id: str
    amount: int


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock, clock_skew=SKEW)


@pytest.fixture
def app(backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=store,
    )


def _deliver(backend: MemoryBackend) -> Delivery:
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    return delivery


def _process_next(app: CloudJobs, backend: MemoryBackend) -> Outcome:
    return app.consumer().process(_deliver(backend))


def test_an_idempotent_job_runs_once_and_a_duplicate_gets_the_stored_result(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore
) -> None:
    runs: list[str] = []

    @app.job("charge", idempotency_key=("customer", "order_id"))
    def charge(payload: Charge, job: Job) -> dict[str, object]:
        runs.append(job.id)
        assert job.idempotency_key == "c-1:o-1"
        return {"receipt": "r-1", "amount": payload.amount}

    first = charge.enqueue(Charge(customer="c-1", order_id="o-1", amount=5))
    charge.enqueue(Charge(customer="c-1", order_id="o-1", amount=5))

    assert _process_next(app, backend) == Completed(result={"receipt": "r-1", "amount": 5})
    requests = store.requests
    assert _process_next(app, backend) == Completed(result={"receipt": "r-1", "amount": 5})
    assert store.requests == requests + 1
    assert runs == [first]


def test_the_producer_key_wins_over_the_derived_one_and_keys_are_per_job_type(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore
) -> None:
    seen: list[str | None] = []

    @app.job("charge", idempotency_key="order_id")
    def charge(payload: Charge, job: Job) -> None:
        seen.append(job.idempotency_key)

    @app.job("refund", idempotent=True)
    def refund(payload: Charge, job: Job) -> None:
        seen.append(job.idempotency_key)

    order = Charge(customer="c", order_id="o-7", amount=1)
    charge.enqueue(order, idempotency_key="order-42")
    refund.enqueue(order, idempotency_key="order-42")
    _process_next(app, backend)
    _process_next(app, backend)

    assert seen == ["order-42", "order-42"]
    assert {record.key for record in store.records()} == {"charge#order-42", "refund#order-42"}


def test_a_lease_held_elsewhere_defers_for_the_rest_of_the_lease(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, int]) -> None:
        raise AssertionError("must not run")

    job_id = app.enqueue("charge", {}, idempotency_key="k")
    lease = lease_for(timedelta(seconds=30), timedelta(seconds=10))
    store.acquire(
        Claim(store_key("charge", "k"), "other", "charge", payload_hash("charge", {})),
        lease=lease,
        retention=timedelta(days=1),
    )
    clock.advance(10)

    outcome = _process_next(app, backend)

    # 30 s lease taken 10 s ago, plus the 2 s clock-skew allowance.
    assert outcome == Deferred(delay=timedelta(seconds=22), reason="lease_held")
    assert app.status(job_id) is None  # the record belongs to the job that holds the lease


def test_a_key_reused_with_another_payload_is_dead_lettered_with_its_reason(
    app: CloudJobs, backend: MemoryBackend
) -> None:
    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, int]) -> None:
        pass

    first = app.enqueue("charge", {"amount": 1}, idempotency_key="k")
    app.enqueue("charge", {"amount": 2}, idempotency_key="k")
    _process_next(app, backend)
    outcome = _process_next(app, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "idempotency_key_reused"
    assert first in outcome.error


class _DownStore(MemoryIdempotencyStore):
    def acquire(self, claim: Claim, *, lease: timedelta, retention: timedelta) -> AcquireResult:
        raise IdempotencyStoreError("connection refused")


def test_an_unreachable_store_defers_idempotent_jobs_and_lets_status_only_jobs_run(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    app = CloudJobs(
        settings=Settings(_env_file=None), backend=backend, clock=clock, idempotency_store=_DownStore()
    )
    runs: list[str] = []

    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, int]) -> None:
        runs.append("charge")

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None:
        runs.append("report")

    app.enqueue("charge", {})
    app.enqueue("report", {})
    charged = _process_next(app, backend)
    reported = _process_next(app, backend)

    assert isinstance(charged, Deferred)
    assert charged.reason == "idempotency_store_unavailable"
    assert reported == Completed(result=None)
    assert runs == ["report"]


def test_a_deferral_near_the_redrive_threshold_is_re_sent_with_the_same_job(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, int]) -> None:
        pass

    job_id = app.enqueue("charge", {"n": 1})
    store.acquire(
        Claim(store_key("charge", job_id), job_id, "charge", payload_hash("charge", {"n": 1})),
        lease=timedelta(seconds=30),
        retention=timedelta(days=1),
    )
    consumer = app.consumer()
    outcomes: list[Outcome] = []
    for _ in range(4):  # maxReceiveCount is 5: receives 1-3 only defer, receive 4 re-sends
        delivery = _deliver(backend)
        outcomes.append(consumer.process(delivery))
        backend.change_visibility([(delivery.receipt, timedelta(0))])

    *deferrals, last = outcomes
    assert all(isinstance(outcome, Deferred) and outcome.requeue is None for outcome in deferrals)
    assert isinstance(last, Deferred)
    assert last.requeue is not None
    assert len(deferrals) == 3
    copy = decode(last.requeue.body)
    assert (copy.id, copy.payload, copy.attempt_offset) == (job_id, {"n": 1}, 0)
    assert last.requeue.delay == last.delay


def test_the_applier_re_sends_a_deferral_and_deletes_the_original(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    backend.send([OutgoingMessage(body="original")])
    delivery = _deliver(backend)
    applier = OutcomeApplier(backend, clock)

    copy = OutgoingMessage(body="copy", delay=timedelta(seconds=5))
    applier.apply(delivery, Deferred(delay=timedelta(seconds=5), reason="lease_held", requeue=copy))
    applier.flush()

    [stored] = backend.messages()
    assert (stored.body, stored.receive_count) == ("copy", 0)
    assert applier.counts["requeued"] == 1


def test_a_failed_attempt_releases_the_lease_and_records_the_error(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore
) -> None:
    @app.job("flaky", idempotent=True)
    def flaky(payload: dict[str, int], job: Job) -> str:
        if job.attempt == 1:
            raise ConnectionError("reset")
        return "ok"

    job_id = app.enqueue("flaky", {})
    assert isinstance(_process_next(app, backend), Retry)
    status = app.status(job_id)
    assert status is not None
    assert (status.state, status.error) == (JobState.RETRYING, "ConnectionError: reset")

    backend.advance(60)
    assert _process_next(app, backend) == Completed(result="ok")
    status = app.status(job_id)
    assert status is not None
    assert (status.state, status.attempts) == (JobState.COMPLETED, 2)


def test_progress_is_recorded_for_jobs_with_a_record_and_validated(
    app: CloudJobs, backend: MemoryBackend, store: MemoryIdempotencyStore
) -> None:
    seen: list[int | None] = []

    @app.job("report", track_status=True)
    def report(payload: dict[str, int], job: Job) -> None:
        job.progress(40)
        seen.append(store.records()[0].progress)
        with pytest.raises(ValueError, match="0–100"):
            job.progress(101)

    @app.job("plain")
    def plain(payload: dict[str, int], job: Job) -> None:
        job.progress(10)  # no record: nothing to write, no error

    app.enqueue("report", {})
    app.enqueue("plain", {})
    assert _process_next(app, backend) == Completed(result=None)
    assert _process_next(app, backend) == Completed(result=None)
    assert seen == [40]
    assert len(store.records()) == 1


def test_a_result_over_the_limit_is_not_stored_and_status_says_why(
    app: CloudJobs, backend: MemoryBackend
) -> None:
    @app.job("big", idempotent=True)
    def big(payload: dict[str, int]) -> str:
        return "x" * 70_000

    job_id = app.enqueue("big", {})
    assert _process_next(app, backend) == Completed(result="x" * 70_000)
    status = app.status(job_id)
    assert status is not None
    assert status.result is None
    assert status.result_omitted == "70002 bytes of JSON, over the 65536-byte limit"


def test_encode_result_stores_json_whole_or_not_at_all() -> None:
    assert encode_result({"a": [1, 2]}).json == '{"a":[1,2]}'
    assert encode_result(None).json is None
    assert encode_result("é" * 3, max_bytes=8).json == json.dumps("é" * 3, ensure_ascii=False)
    too_big = encode_result("é" * 3, max_bytes=5)
    assert (too_big.json, too_big.omitted) == (None, "8 bytes of JSON, over the 5-byte limit")
    assert encode_result(object()).omitted is not None


def test_payload_hash_ignores_key_order_but_not_values_or_type() -> None:
    assert payload_hash("a", {"x": 1, "y": 2}) == payload_hash("a", {"y": 2, "x": 1})
    assert payload_hash("a", {"x": 1}) != payload_hash("a", {"x": 2})
    assert payload_hash("a", {"x": 1}) != payload_hash("b", {"x": 1})


def test_the_lease_is_the_visibility_but_never_under_three_heartbeats() -> None:
    assert lease_for(timedelta(seconds=30), timedelta(seconds=10)) == timedelta(seconds=30)
    assert lease_for(timedelta(seconds=30), timedelta(seconds=15)) == timedelta(seconds=45)


def test_status_needs_a_configured_store(backend: MemoryBackend) -> None:
    app = CloudJobs(settings=Settings(_env_file=None), backend=backend)

    with pytest.raises(ConfigurationError, match="CLOUDJOBS_IDEMPOTENCY_TABLE"):
        app.status("job-1")


def test_testing_swaps_in_a_memory_store(backend: MemoryBackend) -> None:
    app = CloudJobs(settings=Settings(_env_file=None))

    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, int]) -> int:
        return 3

    with app.testing():
        job_id = charge.enqueue({})
        app.drain()
        status = app.status(job_id)
    assert status is not None
    assert (status.state, status.result) == (JobState.COMPLETED, 3)


def test_a_bad_idempotency_key_option_is_a_configuration_error(app: CloudJobs) -> None:
    with pytest.raises(ConfigurationError, match="idempotency_key"):

        @app.job("charge", idempotency_key=[])
        def charge(payload: dict[str, int]) -> None:
            pass
