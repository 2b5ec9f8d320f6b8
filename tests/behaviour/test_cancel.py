"""Cancellation and job states, stated once and run on both harnesses (memory, and SQS + DynamoDB)."""

from __future__ import annotations

import threading

from cloudjobs import CloudJobs, Job, JobState
from cloudjobs.idempotency.base import CancelOutcome
from tests.behaviour.conftest import DEADLINE, Harness, running, wait_for


def _state_is(jobs: CloudJobs, job_id: str, state: JobState) -> bool:
    status = jobs.status(job_id)
    return status is not None and status.state is state


def test_a_cancelled_pending_job_never_runs_and_shows_cancelled(harness: Harness) -> None:
    jobs = harness.app(with_store=True, status_tracking=True)
    runs: list[int] = []
    done = threading.Event()

    @jobs.job("report", track_status=True)
    def report(payload: dict[str, int]) -> None:
        runs.append(payload["n"])
        if payload["n"] == 2:
            done.set()

    cancelled = report.enqueue({"n": 1})
    assert _state_is(jobs, cancelled, JobState.PENDING)
    assert jobs.cancel(cancelled).outcome is CancelOutcome.CANCELLED
    report.enqueue({"n": 2})

    with running(jobs):
        assert done.wait(DEADLINE), "the job after the cancelled one never ran"
        wait_for(lambda: harness.is_empty(jobs), message="the cancelled message acknowledged")

    assert runs == [2]
    assert _state_is(jobs, cancelled, JobState.CANCELLED)


def test_a_running_job_sees_job_cancelled_within_a_heartbeat_and_ends_cancelled(harness: Harness) -> None:
    jobs = harness.app(with_store=True, status_tracking=True, heartbeat_interval_seconds=1)
    started = threading.Event()
    saw_cancellation: list[bool] = []

    @jobs.job("export", track_status=True)
    def export(payload: dict[str, int], job: Job) -> str:
        started.set()
        # Cooperative: a real handler checks job.cancelled between steps; this one waits for it.
        saw_cancellation.append(job.cancel_signal.wait(DEADLINE))
        return "stopped"

    job_id = export.enqueue({"rows": 10})
    with running(jobs):
        assert started.wait(DEADLINE), "the job never started"
        wait_for(lambda: _state_is(jobs, job_id, JobState.RUNNING), message="the job running")
        assert jobs.cancel(job_id).outcome is CancelOutcome.REQUESTED
        wait_for(lambda: _state_is(jobs, job_id, JobState.CANCELLED), message="the job cancelled")
        wait_for(lambda: harness.is_empty(jobs), message="the message acknowledged")

    assert saw_cancellation == [True]


def test_a_running_job_without_a_record_sees_its_marker_within_a_heartbeat(harness: Harness) -> None:
    jobs = harness.app(with_store=True, heartbeat_interval_seconds=1)
    started = threading.Event()
    saw_cancellation: list[bool] = []

    @jobs.job("plain")
    def plain(payload: dict[str, int], job: Job) -> None:
        started.set()
        saw_cancellation.append(job.cancel_signal.wait(DEADLINE))

    job_id = plain.enqueue({"n": 1})
    with running(jobs):
        assert started.wait(DEADLINE), "the job never started"
        assert jobs.cancel(job_id).outcome is CancelOutcome.MARKED
        wait_for(lambda: harness.is_empty(jobs), message="the message acknowledged")

    assert saw_cancellation == [True]


def test_a_job_without_a_record_is_skipped_by_its_cancellation_marker(harness: Harness) -> None:
    jobs = harness.app(with_store=True)
    runs: list[int] = []
    done = threading.Event()

    @jobs.job("plain")
    def plain(payload: dict[str, int]) -> None:
        runs.append(payload["n"])
        done.set()

    cancelled = plain.enqueue({"n": 1})
    assert jobs.cancel(cancelled).outcome is CancelOutcome.MARKED
    plain.enqueue({"n": 2})

    with running(jobs):
        assert done.wait(DEADLINE)
        wait_for(lambda: harness.is_empty(jobs), message="both messages acknowledged")

    assert runs == [2]
    status = jobs.status(cancelled)  # no record, but the marker says it: cancelled
    assert status is not None
    assert status.state is JobState.CANCELLED
