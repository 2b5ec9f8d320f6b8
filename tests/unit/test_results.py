"""jobs.result() on the memory backend and store: values, failures, cancellations, timeouts, no record."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from cloudjobs import (
    CloudJobs,
    JobCancelledError,
    JobFailedError,
    JobNotTrackedError,
    JobState,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    PermanentError,
    ResultError,
    ResultTimeoutError,
    Settings,
)
from cloudjobs.envelope import decode


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock)


def _app(backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore) -> CloudJobs:
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=store,
    )

    @jobs.job("export", track_status=True)
    def export(payload: dict[str, int]) -> dict[str, int]:
        return {"rows": payload["rows"] * 2}

    @jobs.job("plain")
    def plain(payload: dict[str, int]) -> int:
        return payload["rows"] + 1

    @jobs.job("broken", track_status=True, max_attempts=1)
    def broken(payload: dict[str, int]) -> None:
        raise PermanentError("the export target is gone")

    return jobs


@pytest.fixture
def app(backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore) -> CloudJobs:
    return _app(backend, clock, store)


def test_the_result_of_a_drained_job_comes_back_at_once(app: CloudJobs) -> None:
    job_id = app.enqueue("export", {"rows": 21})
    app.drain()

    assert app.result(job_id) == {"rows": 42}


def test_a_job_enqueued_with_track_status_keeps_its_own_record(
    app: CloudJobs, backend: MemoryBackend
) -> None:
    tracked = app.enqueue("plain", {"rows": 1}, track_status=True)
    untracked = app.enqueue("plain", {"rows": 1})
    assert decode(backend.messages()[0].body).track_status is True
    status = app.status(tracked)
    assert status is not None
    assert status.state is JobState.PENDING

    app.drain()

    assert app.result(tracked) == 2
    assert app.status(untracked) is None


def test_enqueue_many_with_track_status_tracks_every_job(app: CloudJobs) -> None:
    ids = app.enqueue_many([("plain", {"rows": 1}), ("plain", {"rows": 2})], track_status=True)
    app.drain()

    assert [app.result(job_id) for job_id in ids] == [2, 3]


def test_a_dead_lettered_job_raises_job_failed_with_its_error(app: CloudJobs) -> None:
    job_id = app.enqueue("broken", {"rows": 1})
    app.drain()

    with pytest.raises(JobFailedError) as failed:
        app.result(job_id)

    assert "the export target is gone" in (failed.value.error or "")
    assert failed.value.job_id == job_id
    assert failed.value.job_type == "broken"
    assert failed.value.attempts == 1


def test_a_cancelled_job_raises_job_cancelled(app: CloudJobs) -> None:
    job_id = app.enqueue("export", {"rows": 1})
    app.cancel(job_id)
    app.drain()

    with pytest.raises(JobCancelledError) as cancelled:
        app.result(job_id)

    assert cancelled.value.job_type == "export"


def test_a_job_without_a_record_cancelled_by_marker_raises_job_cancelled_elsewhere(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    job_id = app.enqueue("plain", {"rows": 1})
    elsewhere = _app(backend, clock, store)  # another process: it did not enqueue the job
    elsewhere.cancel(job_id)

    with pytest.raises(JobCancelledError) as cancelled:
        elsewhere.result(job_id)

    assert cancelled.value.job_type == ""


def test_a_job_not_run_in_time_raises_result_timeout_with_its_state(app: CloudJobs) -> None:
    job_id = app.enqueue("export", {"rows": 1}, track_status=True)  # its pending record written now

    with pytest.raises(ResultTimeoutError) as late:
        app.result(job_id, timeout=0)

    assert late.value.state == "pending"
    assert late.value.timeout == timedelta(0)
    assert isinstance(late.value, TimeoutError)
    assert isinstance(late.value, ResultError)


def test_a_tracked_type_without_status_tracking_has_no_record_until_it_starts(app: CloudJobs) -> None:
    job_id = app.enqueue("export", {"rows": 1})

    with pytest.raises(ResultTimeoutError) as late:
        app.result(job_id, timeout=0)

    assert late.value.state is None


def test_a_job_without_a_record_raises_not_tracked_at_once(app: CloudJobs) -> None:
    job_id = app.enqueue("plain", {"rows": 1})
    app.drain()

    with pytest.raises(JobNotTrackedError) as refused:
        app.result(job_id, timeout=30)

    assert "enqueued without a record" in refused.value.reason


def test_an_unknown_job_id_raises_not_tracked_on_a_consistent_store(app: CloudJobs) -> None:
    with pytest.raises(JobNotTrackedError):
        app.result("no-such-job", timeout=30)


def test_a_job_enqueued_elsewhere_is_found_by_its_id(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore
) -> None:
    job_id = app.enqueue("export", {"rows": 5})
    app.drain()
    elsewhere = _app(backend, clock, store)

    assert elsewhere.result(job_id) == {"rows": 10}


def test_a_wait_ends_when_another_thread_completes_the_job(app: CloudJobs) -> None:
    job_id = app.enqueue("export", {"rows": 3})
    worker = threading.Thread(target=app.drain)

    worker.start()
    try:
        assert app.result(job_id, timeout=60) == {"rows": 6}
    finally:
        worker.join()


def test_result_async_answers_like_result(app: CloudJobs) -> None:
    job_id = app.enqueue("export", {"rows": 4})
    app.drain()

    assert asyncio.run(app.result_async(job_id)) == {"rows": 8}


def test_a_unique_repeat_reads_the_first_jobs_result(app: CloudJobs) -> None:
    first = app.enqueue("export", {"rows": 1}, unique_for=60, unique_key="daily")
    app.drain()

    repeat = app.enqueue("export", {"rows": 1}, unique_for=60, unique_key="daily")

    assert repeat == first
    assert app.result(repeat) == {"rows": 2}
