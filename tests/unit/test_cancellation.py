"""Pending records, job states and cancellation in the consumer core, on the memory backend and store."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from cloudjobs import (
    Cancelled,
    CloudJobs,
    Completed,
    ConfigurationError,
    Delivery,
    Job,
    JobState,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    Settings,
)
from cloudjobs.idempotency.base import CancelOutcome, Status
from cloudjobs.outcomes import Outcome

SKEW = timedelta(seconds=2)


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock, clock_skew=SKEW)


def _app(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore, *, tracking: bool = True
) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None, status_tracking=tracking),
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


def test_old_state_names_are_aliases_of_the_new_ones() -> None:
    assert JobState["COMPLETED"] is JobState.SUCCEEDED
    assert JobState["DEAD_LETTERED"] is JobState.FAILED
    assert [state.value for state in JobState] == [
        "scheduled",
        "waiting_children",
        "pending",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "cancelled",
    ]


def test_status_tracking_writes_a_pending_record_at_enqueue_that_the_run_takes_over(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> int:
        return payload["n"] * 2

    job_id = report.enqueue({"n": 21})
    pending = app.status(job_id)
    assert pending is not None
    assert (pending.state, pending.attempts, pending.job_type) == (JobState.PENDING, 0, "report")

    assert _process_next(app, backend) == Completed(result=42)
    done = app.status(job_id)
    assert done is not None
    assert (done.state, done.attempts, done.result) == (JobState.SUCCEEDED, 1, 42)


def test_an_idempotent_job_with_a_pending_record_runs_once_and_its_duplicate_is_not_rerun(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)
    runs: list[str] = []

    @app.job("charge", idempotency_key="order")
    def charge(payload: dict[str, str], job: Job) -> str:
        runs.append(job.id)
        return "charged"

    first = charge.enqueue({"order": "o-1"})
    second = charge.enqueue({"order": "o-1"})  # the record exists: the write leaves it alone

    assert [record.job_id for record in store.records()] == [first]
    assert _process_next(app, backend) == Completed(result="charged")
    assert _process_next(app, backend) == Completed(result="charged")
    assert runs == [first]
    # The key's record belongs to the first job; the duplicate reads it (status tracking is on).
    status = app.status(second)
    assert status is not None
    assert (status.job_id, status.state) == (first, JobState.SUCCEEDED)


def test_without_status_tracking_no_record_exists_before_the_first_run(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store, tracking=False)

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None: ...

    job_id = report.enqueue({"n": 1})

    assert app.status(job_id) is None
    assert store.records() == []


def test_a_failed_pending_write_fails_the_enqueue_and_sends_nothing(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    app = CloudJobs(settings=Settings(_env_file=None, status_tracking=True), backend=backend, clock=clock)

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None: ...

    with pytest.raises(ConfigurationError):  # no store configured for the pending record
        report.enqueue({"n": 1})
    assert len(backend) == 0


def test_a_cancelled_pending_job_never_runs_and_shows_cancelled(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)
    runs: list[int] = []

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None:
        runs.append(payload["n"])

    job_id = report.enqueue({"n": 1})
    cancellation = app.cancel(job_id)

    assert cancellation.outcome is CancelOutcome.CANCELLED
    assert _process_next(app, backend) == Cancelled()
    assert runs == []
    status = app.status(job_id)
    assert status is not None
    assert status.state is JobState.CANCELLED


def test_cancelling_a_finished_job_changes_nothing(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> str:
        return "done"

    job_id = report.enqueue({"n": 1})
    _process_next(app, backend)

    cancellation = app.cancel(job_id)

    assert cancellation.outcome is CancelOutcome.ALREADY_FINISHED
    assert cancellation.record is not None
    assert cancellation.record.status is Status.COMPLETED


def test_a_job_without_a_record_is_cancelled_by_a_marker_checked_before_it_runs(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store, tracking=False)
    runs: list[int] = []

    @app.job("plain")
    def plain(payload: dict[str, int]) -> None:
        runs.append(payload["n"])

    cancelled_id = plain.enqueue({"n": 1})
    plain.enqueue({"n": 2})

    assert app.cancel(cancelled_id).outcome is CancelOutcome.MARKED
    assert app.cancel(cancelled_id).outcome is CancelOutcome.MARKED  # twice changes nothing
    outcomes = [_process_next(app, backend), _process_next(app, backend)]

    assert outcomes == [Cancelled(), Completed()]
    assert runs == [2]


def test_a_running_job_learns_of_its_cancellation_on_the_lease_renewal_and_ends_cancelled(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)
    seen: list[bool] = []

    @app.job("report", track_status=True)
    def report(payload: dict[str, int], job: Job) -> str:
        seen.append(job.cancelled)
        outcome = app.cancel(job.id)
        assert outcome.outcome is CancelOutcome.REQUESTED
        job.progress(10)  # a write to the record: its answer carries the request, as a heartbeat's does
        seen.append(job.cancelled)
        return "stopped early"

    job_id = report.enqueue({"n": 1})

    assert _process_next(app, backend) == Cancelled()
    assert seen == [False, True]
    status = app.status(job_id)
    assert status is not None
    assert status.state is JobState.CANCELLED


def test_a_handler_waiting_on_its_cancel_signal_wakes_when_the_cancellation_reaches_it(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)
    woke: list[bool] = []

    @app.job("report", track_status=True)
    def report(payload: dict[str, int], job: Job) -> str:
        def cancel_later() -> None:
            time.sleep(0.05)  # the handler waits by then: its wait made the signal's condition
            assert app.cancel(job.id).outcome is CancelOutcome.REQUESTED
            job.progress(10)  # the record write's answer carries the request to the running job

        canceller = threading.Thread(target=cancel_later)
        canceller.start()
        woke.append(job.cancel_signal.wait(5))
        canceller.join()
        return "stopped early"

    report.enqueue({"n": 1})

    assert _process_next(app, backend) == Cancelled()
    assert woke == [True]


def test_a_cancel_requested_job_whose_worker_died_is_not_taken_over(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None: ...

    job_id = report.enqueue({"n": 1})
    consumer = app.consumer()
    prepared = consumer.prepare(_deliver(backend))  # the lease is taken; the worker then "dies"
    assert not isinstance(prepared, Cancelled | Completed)
    assert app.cancel(job_id).outcome is CancelOutcome.REQUESTED

    clock.advance(timedelta(hours=1))  # the lease lapses and the message comes back
    assert consumer.process(_deliver(backend)) == Cancelled()
    status = app.status(job_id)
    assert status is not None
    assert status.state is JobState.CANCELLED


def test_a_retrying_job_cancelled_between_attempts_does_not_run_again(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)
    runs: list[int] = []

    @app.job("flaky", track_status=True)
    def flaky(payload: dict[str, int], job: Job) -> None:
        runs.append(job.attempt)
        raise RuntimeError("boom")

    job_id = flaky.enqueue({"n": 1})
    _process_next(app, backend)
    retrying = app.status(job_id)
    assert retrying is not None
    assert retrying.state is JobState.RETRYING

    assert app.cancel(job_id).outcome is CancelOutcome.CANCELLED
    clock.advance(timedelta(hours=1))
    assert _process_next(app, backend) == Cancelled()
    assert runs == [1]


def test_cancel_needs_a_store(jobs: CloudJobs) -> None:
    with pytest.raises(ConfigurationError):
        jobs.cancel("job-1")


def test_a_tracked_job_cancelled_before_its_record_exists_never_runs(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store, tracking=False)  # the record appears at the first attempt
    ran: list[int] = []

    @app.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None:
        ran.append(payload["n"])

    job_id = report.enqueue({"n": 1})
    assert app.cancel(job_id).outcome is CancelOutcome.MARKED

    app.drain()

    assert ran == []
    status = app.status(job_id)
    assert status is not None
    assert status.state is JobState.CANCELLED
    assert status.job_type == "report"  # the record, written as the job was acknowledged unrun


def test_a_job_without_a_record_reads_cancelled_once_cancelled(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)

    @app.job("plain")
    def plain(payload: dict[str, int]) -> None: ...

    job_id = plain.enqueue({"n": 1})
    assert app.status(job_id) is None
    app.cancel(job_id)

    status = app.status(job_id)

    assert status is not None
    assert (status.job_id, status.state, status.job_type) == (job_id, JobState.CANCELLED, "")


def test_markers_are_read_once_per_received_batch(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store)
    ran: list[int] = []

    @app.job("plain")
    def plain(payload: dict[str, int]) -> None:
        ran.append(payload["n"])

    ids = [plain.enqueue({"n": n}) for n in range(10)]
    app.cancel(ids[3])
    before = store.requests

    app.drain()

    assert sorted(ran) == [n for n in range(10) if n != 3]
    assert store.requests - before == 1  # one batch read for ten jobs, no read per job


def test_with_status_tracking_a_duplicate_reads_the_status_of_its_keys_record(
    backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    app = _app(backend, clock, store, tracking=True)

    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, int]) -> int:
        return payload["n"] * 10

    first = charge.enqueue({"n": 1}, idempotency_key="order-1")
    duplicate = charge.enqueue({"n": 1}, idempotency_key="order-1")
    app.drain()

    status = app.status(duplicate)
    assert status is not None
    assert (status.job_id, status.state, status.result) == (first, JobState.SUCCEEDED, 10)
