"""Effectively-once processing and job status, stated once and run on both harnesses.

``memory``: MemoryBackend and MemoryIdempotencyStore in process. ``sqs``: SqsBackend and
DynamoDbIdempotencyStore over HTTP against the session's moto server. Real workers run in threads.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from pydantic import BaseModel

from cloudjobs import CloudJobs, IdempotencyStoreError, Job, JobState, PermanentError
from cloudjobs.idempotency.base import AcquireResult, Claim, IdempotencyStore, Record, Renewal
from cloudjobs.runtimes.worker import Worker
from tests.behaviour.conftest import DEADLINE, Harness, running, wait_for

DEADLINE_SECONDS = DEADLINE


class Charge(BaseModel):
    order_id: str
    amount: int


class _UnreachableStore:
    """Wraps a store; while ``is_down`` is set, every call fails as an unreachable store's would."""

    def __init__(self, store: IdempotencyStore) -> None:
        self._store = store
        self.is_down = threading.Event()
        self.refused = 0

    def _check(self) -> None:
        if self.is_down.is_set():
            self.refused += 1
            raise IdempotencyStoreError("connection refused", table="jobs")

    def acquire(self, claim: Claim, *, lease: timedelta, retention: timedelta) -> AcquireResult:
        self._check()
        return self._store.acquire(claim, lease=lease, retention=retention)

    def renew(self, key: str, token: str, *, lease: timedelta, progress: int | None = None) -> Renewal:
        self._check()
        return self._store.renew(key, token, lease=lease, progress=progress)

    def complete(
        self, key: str, token: str, *, result: str | None, result_omitted: str | None, retention: timedelta
    ) -> None:
        self._check()
        self._store.complete(key, token, result=result, result_omitted=result_omitted, retention=retention)

    def release(self, key: str, token: str, *, error: str, is_final: bool) -> None:
        self._check()
        self._store.release(key, token, error=error, is_final=is_final)

    def find(self, job_id: str) -> Record | None:
        return self._store.find(job_id)


def _status_is(jobs: CloudJobs, job_id: str, state: JobState) -> bool:
    status = jobs.status(job_id)
    return status is not None and status.state is state


def test_the_same_job_received_by_two_workers_at_once_runs_once(harness: Harness) -> None:
    jobs = harness.app(visibility_timeout_seconds=3, with_store=True)
    workers: list[Worker] = []
    runs: list[str] = []

    def deferred() -> int:
        return sum(worker.counts["deferred"] for worker in workers)

    @jobs.job("charge", idempotency_key="order_id")
    def charge(payload: Charge, job: Job) -> str:
        runs.append(job.id)
        # Hold the lease until the other delivery has reached the other worker and been decided
        # there (deferred: the lease is held), or a few seconds.
        deadline = time.monotonic() + 5
        while deferred() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return f"charged {payload.amount}"

    first = charge.enqueue(Charge(order_id="order-42", amount=5))
    charge.enqueue(Charge(order_id="order-42", amount=5))
    single = {"concurrency": 1, "prefetch": 0}
    with running(jobs, **single) as one, running(jobs, **single) as two:
        workers.extend([one, two])
        wait_for(lambda: one.counts["completed"] + two.counts["completed"] == 2, message="both acknowledged")
    assert len(runs) == 1
    assert deferred() >= 1
    status = jobs.status(first)
    assert status is not None
    assert (status.state, status.result, status.attempts) == (JobState.COMPLETED, "charged 5", 1)
    wait_for(lambda: harness.is_empty(jobs), message="both messages deleted")


def test_a_duplicate_after_completion_is_acknowledged_without_running(harness: Harness) -> None:
    jobs = harness.app(with_store=True)
    runs: list[int] = []

    @jobs.job("charge", idempotent=True)
    def charge(payload: Charge) -> dict[str, int]:
        runs.append(payload.amount)
        return {"charged": payload.amount}

    with running(jobs) as worker:
        first = charge.enqueue(Charge(order_id="o-1", amount=7), idempotency_key="order-o-1")
        wait_for(lambda: worker.counts["completed"] == 1)
        charge.enqueue(Charge(order_id="o-1", amount=7), idempotency_key="order-o-1")
        wait_for(lambda: worker.counts["completed"] == 2, message="the duplicate acknowledged")
    assert runs == [7]
    status = jobs.status(first)
    assert status is not None
    assert (status.state, status.result, status.progress) == (JobState.COMPLETED, {"charged": 7}, 100)
    wait_for(lambda: harness.is_empty(jobs), message="both messages deleted")


def test_a_failed_attempt_releases_the_lease_and_the_retry_succeeds(harness: Harness) -> None:
    # The lease is the 30-second visibility timeout; the retry comes after a 1-second backoff, so it
    # can run only because the failed attempt released the lease.
    jobs = harness.app(with_store=True, random=lambda: 0.75, backoff_base_seconds=2, backoff_cap_seconds=4)
    attempts: list[int] = []

    @jobs.job("flaky", idempotent=True, max_attempts=3)
    def flaky(payload: dict[str, int], job: Job) -> str:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise ConnectionError("upstream reset")
        return "ok"

    started = time.monotonic()
    job_id = flaky.enqueue({})
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["completed"] == 1)
    assert attempts == [1, 2]
    assert time.monotonic() - started < 20
    status = jobs.status(job_id)
    assert status is not None
    assert (status.state, status.attempts, status.result) == (JobState.COMPLETED, 2, "ok")
    assert status.error == "ConnectionError: upstream reset"


def test_a_key_reused_with_a_different_payload_goes_to_the_dlq_with_its_reason(harness: Harness) -> None:
    jobs = harness.app(with_store=True)
    runs: list[int] = []

    @jobs.job("charge", idempotency_key=lambda payload: payload.order_id)
    def charge(payload: Charge) -> None:
        runs.append(payload.amount)

    with running(jobs) as worker:
        first = charge.enqueue(Charge(order_id="o-9", amount=5))
        wait_for(lambda: worker.counts["completed"] == 1)
        charge.enqueue(Charge(order_id="o-9", amount=500))
        [dead] = harness.dead_letters(jobs, expected=1)
    assert runs == [5]
    assert dead["reason"] == "idempotency_key_reused"
    assert "'o-9'" in dead["error"]
    assert first in dead["error"]
    assert '"amount":500' in dead["body"]


def test_with_the_store_unreachable_nothing_runs_and_nothing_is_lost(harness: Harness) -> None:
    # maxReceiveCount 2: every deferral is near the redrive threshold, so the message is re-sent
    # instead of being left to the queue's redrive (which would move it to the DLQ).
    store = _UnreachableStore(harness.make_store())
    store.is_down.set()
    jobs = harness.app(max_receive_count=2, idempotency_store=store)
    runs: list[str] = []

    @jobs.job("charge", idempotent=True)
    def charge(payload: Charge, job: Job) -> None:
        runs.append(job.id)

    job_id = charge.enqueue(Charge(order_id="o-3", amount=1))
    with running(jobs) as worker:
        wait_for(lambda: store.refused >= 2, message="two refused acquires")
        assert runs == []
        store.is_down.clear()
        wait_for(lambda: worker.counts["completed"] == 1, message="the job completed once the store is back")
    assert runs == [job_id]
    assert worker.counts["requeued"] >= 1
    assert worker.counts["dead_lettered"] == 0
    assert _status_is(jobs, job_id, JobState.COMPLETED)
    wait_for(lambda: harness.is_empty(jobs), message="the message deleted")


def test_a_long_job_keeps_its_lease_and_a_duplicate_sent_meanwhile_does_not_run(harness: Harness) -> None:
    jobs = harness.app(visibility_timeout_seconds=2, with_store=True)
    started = threading.Event()
    runs: list[str] = []

    @jobs.job("long", idempotent=True, timeout=30)
    def long(payload: dict[str, int], job: Job) -> None:
        runs.append(job.id)
        started.set()
        time.sleep(6)  # the work itself: three leases long, renewed by the heartbeat

    job_id = long.enqueue({}, idempotency_key="long-1")
    with running(jobs, concurrency=2) as worker:
        assert started.wait(DEADLINE_SECONDS)
        long.enqueue({}, idempotency_key="long-1")
        wait_for(lambda: worker.counts["completed"] == 2, message="the job and its duplicate acknowledged")
    assert runs == [job_id]
    assert worker.counts["deferred"] + worker.counts["requeued"] >= 1


def test_a_timed_out_sync_handler_keeps_its_lease_until_its_thread_ends(harness: Harness) -> None:
    jobs = harness.app(visibility_timeout_seconds=3, with_store=True, random=lambda: 0.0)
    runs: list[int] = []
    ended = threading.Event()

    @jobs.job("slow", idempotent=True, timeout=1)
    def slow(payload: dict[str, int], job: Job) -> str:
        runs.append(job.attempt)
        time.sleep(4)  # the work itself, well past the 1-second timeout
        ended.set()
        return "late but done"

    job_id = slow.enqueue({})
    with running(jobs, concurrency=2) as worker:
        # The timed-out attempt's message stays hidden until its thread ends; then the record is
        # completed, the retry follows (no backoff) and is acknowledged with the stored result.
        wait_for(lambda: worker.counts["completed"] == 1, message="the retry acknowledged")
    assert ended.is_set()
    assert runs == [1]
    assert worker.counts["retried"] == 1
    assert worker.counts["deferred"] + worker.counts["requeued"] == 0  # never ran beside itself
    status = jobs.status(job_id)
    assert status is not None
    assert (status.state, status.result) == (JobState.COMPLETED, "late but done")


def test_progress_and_status_are_visible_while_the_job_runs(harness: Harness) -> None:
    jobs = harness.app(with_store=True)
    halfway = threading.Event()
    finish = threading.Event()

    @jobs.job("report", track_status=True)
    def report(payload: dict[str, int], job: Job) -> dict[str, str]:
        job.progress(50)
        halfway.set()
        finish.wait(DEADLINE_SECONDS)
        return {"url": "s3://reports/1"}

    job_id = report.enqueue({})
    assert jobs.status(job_id) is None
    with running(jobs) as worker:
        assert halfway.wait(DEADLINE_SECONDS)

        def running_halfway() -> bool:
            status = jobs.status(job_id)
            return status is not None and (status.state, status.progress) == (JobState.RUNNING, 50)

        wait_for(running_halfway, message="status running at 50%")
        finish.set()
        wait_for(lambda: worker.counts["completed"] == 1)
    wait_for(lambda: _status_is(jobs, job_id, JobState.COMPLETED), message="status completed")
    status = jobs.status(job_id)
    assert status is not None
    assert (status.result, status.progress, status.is_finished) == ({"url": "s3://reports/1"}, 100, True)


def test_a_dead_lettered_job_reads_as_dead_lettered(harness: Harness) -> None:
    jobs = harness.app(with_store=True)
    calls: list[int] = []

    @jobs.job("doomed", idempotent=True)
    def doomed(payload: dict[str, int], job: Job) -> None:
        calls.append(job.attempt)
        raise PermanentError("bad data")

    job_id = doomed.enqueue({})
    with running(jobs):
        harness.dead_letters(jobs, expected=1)
        wait_for(lambda: _status_is(jobs, job_id, JobState.DEAD_LETTERED), message="status dead-lettered")
    status = jobs.status(job_id)
    assert status is not None
    assert (status.error, status.is_finished) == ("PermanentError: bad data", True)
    assert calls == [1]
