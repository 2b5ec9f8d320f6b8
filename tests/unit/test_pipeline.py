"""The one pipeline (``Consumer.run``): middleware handles, every exception an outcome, one applier."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest

from cloudjobs import (
    CloudJobs,
    Completed,
    DeadLetter,
    Deferred,
    Delivery,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    Outcome,
    PermanentError,
    Released,
    Retry,
    Settings,
)
from cloudjobs.applier import BufferedVisibility, LeftToLambda, OutcomeApplier
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.consumer import Prepared
from cloudjobs.invocation import Invocation
from cloudjobs.middleware import Middleware, RunHandle
from cloudjobs.outcomes import Reason
from cloudjobs.run import Run


def _deliver(backend: MemoryBackend) -> Delivery:
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    return delivery


class _Recorder(RunHandle):
    """A handle per run, recording every hook it sees."""

    __slots__ = ("calls", "decide")

    def __init__(self, calls: list[str], decide: Outcome | None = None) -> None:
        self.calls = calls
        self.decide = decide

    def before_run(self, run: Run) -> Outcome | None:
        assert run.prepared is not None
        self.calls.append(f"before_run {run.prepared.job.type}")
        return self.decide

    def record_progress(self, run: Run, percent: int) -> None:
        self.calls.append(f"progress {percent}")

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        self.calls.append(f"settle {type(outcome).__name__} started={run.has_started}")
        return outcome


class _RecordingMiddleware:
    def __init__(self, decide: Outcome | None = None) -> None:
        self.calls: list[str] = []
        self.decide = decide
        self.handles: list[_Recorder] = []

    def start(self, run: Run) -> RunHandle:
        handle = _Recorder(self.calls, self.decide)
        self.handles.append(handle)
        return handle


def test_a_middleware_gets_a_handle_of_its_own_for_each_run(jobs: CloudJobs, backend: MemoryBackend) -> None:
    middleware = _RecordingMiddleware()
    assert isinstance(middleware, Middleware)
    jobs.add_middleware(middleware)

    @jobs.job("greet", track_status=False)
    def greet(payload: dict[str, str]) -> str:
        return "hi"

    jobs.enqueue("greet", {})
    jobs.enqueue("greet", {})
    report = jobs.drain()

    assert report.completed == 2
    assert len(middleware.handles) == 2
    assert middleware.handles[0] is not middleware.handles[1]
    assert middleware.calls == ["before_run greet", "settle Completed started=True"] * 2


def test_every_started_handle_is_settled_also_for_a_message_that_never_decoded(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    middleware = _RecordingMiddleware()
    jobs.add_middleware(middleware)
    backend.send([OutgoingMessage(body='{"cloudjobs": 1, "type": 3}')])

    outcome = jobs.consumer().process(_deliver(backend))

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason is Reason.MALFORMED_ENVELOPE
    assert middleware.calls == ["settle DeadLetter started=False"]


def test_a_later_middlewares_decision_still_settles_the_earlier_handles(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    outer, inner = _RecordingMiddleware(), _RecordingMiddleware(decide=Completed(result="cached"))
    jobs.add_middleware(outer)
    jobs.add_middleware(inner)
    ran: list[str] = []

    @jobs.job("cached")
    def cached(payload: object) -> None:
        ran.append("ran")

    jobs.enqueue("cached", {})
    outcome = jobs.consumer().process(_deliver(backend))

    assert outcome == Completed(result="cached")
    assert ran == []
    assert outer.calls == ["before_run cached", "settle Completed started=False"]
    assert inner.calls == ["before_run cached", "settle Completed started=False"]


class _Replacing(RunHandle):
    __slots__ = ()

    def start(self, run: Run) -> RunHandle:
        return self

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        return Completed(result=f"was {type(outcome).__name__}")


def test_handles_settle_innermost_first_and_may_replace_the_outcome(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    outer = _RecordingMiddleware()
    jobs.add_middleware(outer)
    jobs.add_middleware(_Replacing())

    @jobs.job("fails")
    def fails(payload: object) -> None:
        raise PermanentError("no")

    jobs.enqueue("fails", {})
    outcome = jobs.consumer().process(_deliver(backend))

    assert outcome == Completed(result="was DeadLetter")
    assert outer.calls[-1] == "settle Completed started=True"


class _Exploding(RunHandle):
    __slots__ = ("stage",)

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def start(self, run: Run) -> RunHandle:
        if self.stage == "start":
            raise RuntimeError("start exploded")
        return self

    def before_run(self, run: Run) -> Outcome | None:
        if self.stage == "before_run":
            raise RuntimeError("before_run exploded")
        return None

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        if self.stage == "settle":
            raise RuntimeError("settle exploded")
        return outcome


@pytest.mark.parametrize("stage", ["start", "before_run", "settle"])
def test_an_exception_outside_the_handler_becomes_a_retry_not_an_escape(
    jobs: CloudJobs, backend: MemoryBackend, stage: str
) -> None:
    jobs.add_middleware(_Exploding(stage))

    @jobs.job("work")
    def work(payload: object) -> str:
        return "done"

    jobs.enqueue("work", {})
    outcome = jobs.consumer().process(_deliver(backend))

    assert isinstance(outcome, Retry)
    assert f"RuntimeError: {stage} exploded" in outcome.error


def test_an_exception_outside_the_handler_is_dead_lettered_once_attempts_run_out(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None, max_attempts=2), backend=backend, clock=clock)
    jobs.add_middleware(_Exploding("before_run"))

    @jobs.job("work")
    def work(payload: object) -> str:
        return "done"

    jobs.enqueue("work", {})
    report = jobs.drain()

    assert report.retried == 1
    assert report.dead_lettered == 1
    [dead] = jobs.dlq.list()
    assert dead.reason == Reason.MAX_ATTEMPTS


def test_an_apply_that_raises_is_logged_and_the_outcome_still_returned(
    jobs: CloudJobs, backend: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    @jobs.job("work")
    def work(payload: object) -> str:
        return "done"

    def apply(delivery: Delivery, outcome: Outcome) -> None:
        raise ValueError("applier bug")

    jobs.enqueue("work", {})
    outcome = jobs.consumer().run(_deliver(backend), apply=apply)

    assert outcome == Completed(result="done")
    assert "applying the outcome of message" in caplog.text


class _FakeMonitor:
    """Fires deadlines and renewals when the test says so."""

    def __init__(self) -> None:
        self.deadlines: list[Callable[[], None]] = []
        self.leases: dict[str, Callable[[], None]] = {}

    def call_at(self, delay: timedelta, action: Callable[[], None]) -> Callable[[], None]:
        self.deadlines.append(action)
        return lambda: None

    def keep_lease(self, receipt: str, renew: Callable[[], None]) -> None:
        self.leases[receipt] = renew

    def drop_lease(self, receipt: str) -> None:
        del self.leases[receipt]


class _Renewing(RunHandle):
    __slots__ = ("events",)

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def start(self, run: Run) -> RunHandle:
        return self

    def renew(self, run: Run) -> None:
        self.events.append("renew")

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        self.events.append(f"settle {type(outcome).__name__} still_running={run.is_still_running}")
        return outcome

    def settle_late(self, run: Run, *, result: object, error: BaseException | None) -> None:
        self.events.append(f"settle_late {result}")


def test_a_sync_handler_past_its_deadline_is_settled_then_and_applied_when_it_returns(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    events: list[str] = []
    jobs.add_middleware(_Renewing(events))
    monitor = _FakeMonitor()
    applied: list[Outcome] = []

    @jobs.job("slow")
    def slow(payload: object) -> str:
        # While it runs: the heartbeat renews, then the deadline passes.
        [renew] = monitor.leases.values()
        renew()
        [deadline] = monitor.deadlines
        deadline()
        assert events[-1] == "settle Retry still_running=True"
        assert applied == []  # the message stays hidden while the thread runs
        return "late result"

    jobs.enqueue("slow", {})
    outcome = jobs.consumer().run(
        _deliver(backend), Invocation(monitor=monitor), lambda _, outcome: applied.append(outcome)
    )

    assert isinstance(outcome, Retry)
    assert "JobTimeoutError" in outcome.error
    assert applied == [outcome]
    assert monitor.leases == {}
    assert events == ["renew", "settle Retry still_running=True", "settle_late late result"]


def test_a_handler_that_returns_before_its_deadline_cancels_it(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    monitor = _FakeMonitor()
    applied: list[Outcome] = []

    @jobs.job("quick")
    def quick(payload: object) -> str:
        return "ok"

    jobs.enqueue("quick", {})
    outcome = jobs.consumer().run(
        _deliver(backend), Invocation(monitor=monitor), lambda _, outcome: applied.append(outcome)
    )
    [deadline] = monitor.deadlines
    deadline()  # fires after the return: nothing more happens

    assert outcome == Completed(result="ok")
    assert applied == [Completed(result="ok")]


def test_progress_goes_to_the_handles_of_its_own_run(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        idempotency_store=MemoryIdempotencyStore(clock=clock),
    )
    middleware = _RecordingMiddleware()
    jobs.add_middleware(middleware)

    @jobs.job("report", track_status=True)
    def report(payload: dict[str, int], job: object) -> None:
        from cloudjobs import Job

        assert isinstance(job, Job)
        job.progress(payload["n"])

    jobs.enqueue("report", {"n": 40})
    jobs.enqueue("report", {"n": 70})
    jobs.drain()

    assert [call for call in middleware.calls if call.startswith("progress")] == [
        "progress 40",
        "progress 70",
    ]
    assert middleware.handles[0].calls is middleware.handles[1].calls  # one list, two handles


class _OldStyle:
    def before_run(self, prepared: Prepared) -> Outcome | None:
        return None

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        return outcome


def test_the_earlier_middleware_protocol_still_works_with_a_deprecation_warning(jobs: CloudJobs) -> None:
    with pytest.warns(DeprecationWarning, match="implements ConsumerMiddleware"):
        jobs.add_middleware(_OldStyle())

    @jobs.job("work")
    def work(payload: object) -> str:
        return "done"

    jobs.enqueue("work", {})
    assert jobs.drain().completed == 1


def test_outcome_reasons_are_members_of_one_enum(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("never")
    def never(payload: object) -> None:
        raise PermanentError("never")

    jobs.enqueue("never", {})
    outcome = jobs.consumer().process(_deliver(backend))

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason is Reason.PERMANENT_ERROR
    assert str(outcome.reason) == "permanent_error"  # a StrEnum: the stored value is unchanged


def test_lambdas_applier_reports_what_stays_and_hides_in_batches_of_ten(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    for start in range(0, 25, 10):
        backend.send([OutgoingMessage(body=str(n)) for n in range(start, min(start + 10, 25))])
    deliveries: list[Delivery] = []
    while batch := backend.receive(max_messages=10, wait=timedelta(0)):
        deliveries.extend(batch)
    calls: list[int] = []
    change_visibility = backend.change_visibility

    def counting(changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        calls.append(len(changes))
        return change_visibility(changes)

    backend.change_visibility = counting  # type: ignore[method-assign]  # counts the calls
    visibility = BufferedVisibility(backend, lambda: timedelta(minutes=1))
    applier = OutcomeApplier(backend, clock, acknowledging=LeftToLambda(), hiding=visibility)

    stays = [applier.apply(delivery, Released(reason=Reason.TIME_BUDGET)) for delivery in deliveries[:23]]
    stays += [applier.apply(delivery, Completed()) for delivery in deliveries[23:]]
    visibility.flush()

    assert stays == [True] * 23 + [False] * 2
    assert calls == [10, 10, 3]
    assert len(backend.receive(max_messages=10, wait=timedelta(0))) == 10  # released: visible again


def test_a_buffered_visibility_change_is_skipped_when_the_invocation_is_about_to_end(
    clock: ManualClock, backend: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.send([OutgoingMessage(body="x")])
    delivery = _deliver(backend)
    visibility = BufferedVisibility(backend, lambda: timedelta(milliseconds=100))

    visibility.hide(delivery, timedelta(0))
    visibility.flush()

    assert "1 visibility changes skipped" in caplog.text
    assert backend.receive(max_messages=1, wait=timedelta(0)) == []  # still invisible


def test_the_worker_applier_re_sends_a_deferral_copy_and_counts_it(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    backend.send([OutgoingMessage(body="original")])
    delivery = _deliver(backend)
    applier = OutcomeApplier(backend, clock)
    copy = OutgoingMessage(body="copy")

    stays = applier.apply(delivery, Deferred(delay=timedelta(0), reason=Reason.LEASE_HELD, requeue=copy))
    applier.flush()

    assert stays is False
    assert [message.body for message in backend.messages()] == ["copy"]
    assert applier.counts["requeued"] == 1


def test_the_worker_runs_async_and_sync_handlers_through_the_same_pipeline(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None, wait_time_seconds=0), backend=backend, clock=clock)
    middleware = _RecordingMiddleware()
    jobs.add_middleware(middleware)
    done = threading.Event()
    seen: list[str] = []

    @jobs.job("sync")
    def sync(payload: object) -> None:
        seen.append("sync")

    @jobs.job("async")
    async def asynchronous(payload: object) -> None:
        seen.append("async")
        done.set()

    jobs.enqueue("sync", {})
    worker = jobs.worker(concurrency=1, queue_metrics_interval=None)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        assert worker.started.wait(10)
        jobs.enqueue("async", {})
        assert done.wait(10)
    finally:
        worker.stop()
        runner.join(10)

    assert sorted(seen) == ["async", "sync"]
    assert worker.counts["completed"] == 2
    assert (
        sorted(call for call in middleware.calls if call.startswith("settle"))
        == ["settle Completed started=True"] * 2
    )
