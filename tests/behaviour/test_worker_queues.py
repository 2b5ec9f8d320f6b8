"""A worker on several queues, stated once and run on every backend (memory, and SQS over HTTP):
jobs run from the queue they were sent to, fail into their own queue's DLQ, share the handlers by
weight or strict order (with its starvation guard), keep within their queue's cap, and are released
queue by queue when the worker stops."""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

from cloudjobs import CloudJobs, Job, PermanentError
from cloudjobs.backends.base import QueueStatistics
from cloudjobs.runtimes.worker import ShutdownReport, Worker
from tests.behaviour.conftest import DEADLINE, Harness, running, wait_for


def _counts(jobs: CloudJobs, queue: str) -> tuple[int, int]:
    """A queue's (visible, in flight) message counts."""
    backend = jobs.backend_of(queue)
    assert isinstance(backend, QueueStatistics)
    counts = backend.message_counts()
    return counts.visible, counts.in_flight


def test_each_job_runs_from_the_queue_it_was_sent_to_by_its_type_or_by_the_enqueue(harness: Harness) -> None:
    jobs = harness.app(queues=["critical", "bulk"])
    ran_from: dict[str, str] = {}

    @jobs.job("alert", queue="critical")
    def alert(payload: dict[str, str], job: Job) -> None:
        ran_from[payload["id"]] = job.queue

    @jobs.job("report", queue="bulk")
    def report(payload: dict[str, str], job: Job) -> None:
        ran_from[payload["id"]] = job.queue

    @jobs.job("email")
    def email(payload: dict[str, str], job: Job) -> None:
        ran_from[payload["id"]] = job.queue

    alert.enqueue({"id": "alert"})
    report.enqueue({"id": "report"})
    email.enqueue({"id": "email"})
    email.enqueue({"id": "email-to-bulk"}, queue="bulk")
    jobs.enqueue("report", {"id": "report-to-critical"}, queue="critical")
    with running(jobs, queues={"critical": 6, "default": 3, "bulk": 1}) as worker:
        wait_for(lambda: worker.counts["completed"] == 5)

    sqs_name = {queue: jobs.backend_of(queue).info().name for queue in ("critical", "default", "bulk")}
    assert ran_from == {
        "alert": sqs_name["critical"],
        "report-to-critical": sqs_name["critical"],
        "email": sqs_name["default"],
        "report": sqs_name["bulk"],
        "email-to-bulk": sqs_name["bulk"],
    }
    assert {queue: counts["completed"] for queue, counts in worker.counts_by_queue.items()} == {
        "critical": 2,
        "default": 1,
        "bulk": 2,
    }
    for queue in sqs_name:
        wait_for(partial(harness.is_empty, jobs, queue), message=f"{queue} to be emptied")


def test_a_failing_job_lands_in_its_own_queues_dlq_with_its_reason(harness: Harness) -> None:
    jobs = harness.app(queues=["bulk"])

    @jobs.job("import", queue="bulk")
    def import_file(payload: dict[str, str]) -> None:
        raise PermanentError("corrupt file")

    @jobs.job("email")
    def email(payload: dict[str, str]) -> None:
        return None

    import_file.enqueue({"file": "a.csv"})
    email.enqueue({"to": "a@example.com"})
    with running(jobs, queues=["default", "bulk"]) as worker:
        [dead] = harness.dead_letters(jobs, expected=1, queue="bulk")
        wait_for(lambda: worker.counts["completed"] == 1)

    assert (dead["reason"], dead["error"], dead["job_type"]) == (
        "permanent_error",
        "PermanentError: corrupt file",
        "import",
    )
    assert worker.counts_by_queue["bulk"]["dead_lettered"] == 1
    default_dlq = jobs.stats(queue="default").dlq_depth
    assert default_dlq == 0


def test_a_queues_cap_holds_while_the_other_queues_jobs_still_run(harness: Harness) -> None:
    jobs = harness.app(queues=["bulk"])
    release = threading.Event()
    lock = threading.Lock()
    bulk_running = 0
    bulk_most = 0

    @jobs.job("crunch", queue="bulk")
    def crunch(payload: dict[str, int]) -> None:
        nonlocal bulk_running, bulk_most
        with lock:
            bulk_running += 1
            bulk_most = max(bulk_most, bulk_running)
        try:
            release.wait(DEADLINE)
        finally:
            with lock:
                bulk_running -= 1

    @jobs.job("alert")
    def alert(payload: dict[str, int]) -> None:
        return None

    crunch.enqueue_many([{"n": index} for index in range(8)])
    options: dict[str, Any] = {"queues": {"default": 1, "bulk": 1}, "queue_concurrency": {"bulk": 2}}
    with running(jobs, concurrency=4, **options) as worker:
        try:
            wait_for(lambda: bulk_running == 2, message="bulk at its cap")
            alert.enqueue_many([{"n": index} for index in range(5)])
            # Bulk holds its two slots and has six more waiting: the other two slots run the alerts.
            wait_for(lambda: worker.counts_by_queue["default"]["completed"] == 5, message="the alerts")
            assert bulk_running == 2
        finally:
            release.set()
        wait_for(lambda: worker.counts["completed"] == 13)

    assert bulk_most == 2


def test_strict_orders_guard_runs_the_lower_queue_while_the_top_queue_has_a_backlog(harness: Harness) -> None:
    jobs = harness.app(queues=["critical"])
    starts: list[str] = []

    @jobs.job("alert", queue="critical")
    def alert(payload: dict[str, int]) -> None:
        starts.append("critical")
        time.sleep(0.02)  # the work itself: long enough for the receiver to keep the backlog full

    @jobs.job("cleanup")
    def cleanup(payload: dict[str, int]) -> None:
        starts.append("default")

    alert.enqueue_many([{"n": index} for index in range(60)])
    with running(jobs, queues=["critical", "default"], concurrency=1, prefetch=20) as worker:
        wait_for(lambda: len(starts) >= 5, message="the critical backlog under way")
        sent_after = len(starts)
        cleanup.enqueue_many([{"n": index} for index in range(3)])
        wait_for(lambda: worker.counts["completed"] == 63)

    lower = [position - sent_after for position, queue in enumerate(starts) if queue == "default"]
    # One start in ten goes to the waiting lower queue: the three cleanups start within about 30
    # starts of their arrival (plus the moment their receive took), not after the alerts' backlog.
    assert len(lower) == 3
    assert lower[-1] < 40, starts


def test_stopping_releases_the_unstarted_messages_of_every_queue(harness: Harness) -> None:
    # Five minutes of visibility: a held message is visible again within the test only if released.
    jobs = harness.app(queues=["bulk"], visibility_timeout_seconds=300)
    gate = threading.Event()
    started: list[str] = []

    @jobs.job("hold")
    def hold(payload: dict[str, str]) -> None:
        started.append(payload["id"])
        gate.wait(DEADLINE)

    @jobs.job("hold-bulk", queue="bulk")
    def hold_bulk(payload: dict[str, str]) -> None:
        started.append(payload["id"])
        gate.wait(DEADLINE)

    hold.enqueue_many([{"id": f"default-{index}"} for index in range(4)])
    hold_bulk.enqueue_many([{"id": f"bulk-{index}"} for index in range(4)])
    # One handler; each queue holds its one slot plus a prefetch of three: all eight are held.
    worker = jobs.worker(
        queues=["default", "bulk"],
        concurrency=1,
        prefetch=3,
        shutdown_timeout=0.5,
        queue_metrics_interval=None,
    )
    try:
        report = _run_until_held(worker, jobs, started)
    finally:
        gate.set()

    assert report == ShutdownReport(released=7, abandoned=1)
    running_queue = "bulk" if started[0].startswith("bulk") else "default"
    idle_queue = "default" if running_queue == "bulk" else "bulk"
    assert worker.counts_by_queue[running_queue]["released"] == 3
    assert worker.counts_by_queue[idle_queue]["released"] == 4
    assert _counts(jobs, running_queue) == (3, 1)
    assert _counts(jobs, idle_queue) == (4, 0)


def _run_until_held(worker: Worker, jobs: CloudJobs, started: list[str]) -> ShutdownReport:
    """Run ``worker`` in a thread until both queues' four messages are held and one job runs; stop
    it and return its report."""
    reports: list[ShutdownReport] = []
    thread = threading.Thread(target=lambda: reports.append(worker.run()), name="behaviour-worker")
    thread.start()
    try:
        wait_for(
            lambda: len(started) == 1 and _counts(jobs, "default") == _counts(jobs, "bulk") == (0, 4),
            message="every message held and one running",
        )
    finally:
        worker.stop()
        thread.join(DEADLINE)
    assert reports, "the worker did not stop"
    return reports[0]
