"""Rate and concurrency limits on the memory backend and limiter: specs refused at registration,
the GCRA arithmetic, deferrals that are not attempts, slots given back on every kind of finish."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from cloudjobs import (
    CloudJobs,
    Completed,
    ConfigurationError,
    DeadLetter,
    Deferred,
    InvalidLimitError,
    Job,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    PermanentError,
    Retry,
    Settings,
)
from cloudjobs.backends.base import Delivery
from cloudjobs.envelope import decode
from cloudjobs.limits import RateLimit
from cloudjobs.limits.base import Granted, RateExceeded, Slot, SlotsFull, concurrency_key, gcra
from cloudjobs.limits.memory import MemoryLimiter
from cloudjobs.limits.spec import parse_rate
from cloudjobs.outcomes import Outcome
from cloudjobs.runtimes.applier import OutcomeApplier
from tests.fresh import run_fresh
from tests.otel import Capture


class Export(BaseModel):
    tenant_id: str
    n: int = 0


@dataclass
class Mail:
    to: str


def _deliver(backend: MemoryBackend) -> Delivery:
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    return delivery


# -- specs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "seconds"),
    [
        ("100/m", 100, 60),
        ("20/s", 20, 1),
        ("5/10s", 5, 10),
        ("3 / hour", 3, 3600),
        ("7/minutes", 7, 60),
        ("1/d", 1, 86400),
    ],
)
def test_a_rate_reads_as_a_count_per_period(text: str, count: int, seconds: int) -> None:
    rate = parse_rate(text)

    assert (rate.count, rate.period) == (count, timedelta(seconds=seconds))
    assert rate.bucket == count  # the default burst: one period's budget


@pytest.mark.parametrize("text", ["100/x", "0/m", "100/ms", "m/100", "-1/s", "100", "100/0s", ""])
def test_a_malformed_rate_is_refused_at_registration(jobs: CloudJobs, text: str) -> None:
    with pytest.raises(InvalidLimitError) as raised:

        @jobs.job("send-email", rate_limit=text)
        def send(payload: Mail) -> None: ...

    assert (raised.value.job_name, raised.value.setting) == ("send-email", "rate_limit")
    assert "send-email" in str(raised.value)
    assert isinstance(raised.value, ConfigurationError)
    assert "send-email" not in jobs.registry


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, 1001])
def test_a_concurrency_limit_out_of_range_is_refused(jobs: CloudJobs, limit: Any) -> None:
    with pytest.raises(InvalidLimitError) as raised:
        jobs.job("export", concurrency_limit=limit)

    assert raised.value.setting == "concurrency_limit"


def test_a_limit_key_field_the_model_lacks_is_refused_naming_the_fields(jobs: CloudJobs) -> None:
    with pytest.raises(InvalidLimitError, match="tenant") as raised:

        @jobs.job("export", concurrency_limit=5, limit_key="tenant")
        def export(payload: Export) -> None: ...

    assert raised.value.setting == "limit_key"
    assert "tenant_id" in str(raised.value)


def test_a_limit_key_field_of_a_dataclass_payload_is_checked_too(jobs: CloudJobs) -> None:
    with pytest.raises(InvalidLimitError):

        @jobs.job("mail", rate_limit="1/s", limit_key="domain")
        def mail(payload: Mail) -> None: ...

    @jobs.job("mail-ok", rate_limit="1/s", limit_key="to")
    def mail_ok(payload: Mail) -> None: ...

    assert jobs.registry["mail-ok"].limits is not None


def test_a_limit_key_without_a_limit_is_refused(jobs: CloudJobs) -> None:
    with pytest.raises(InvalidLimitError, match="needs a rate_limit or a concurrency_limit"):
        jobs.job("export", limit_key="tenant_id")


def test_a_rate_limit_object_chooses_the_burst_and_refuses_nonsense() -> None:
    assert RateLimit(10, timedelta(seconds=1), burst=1).tolerance == timedelta(0)
    with pytest.raises(InvalidLimitError):
        RateLimit(10, timedelta(seconds=1), burst=0)
    with pytest.raises(InvalidLimitError):
        RateLimit(10, timedelta(0))


# -- the arithmetic --------------------------------------------------------------------------------


def test_gcra_lets_a_burst_through_then_one_start_per_interval() -> None:
    rate = RateLimit(10, timedelta(seconds=1), burst=3)
    tat: float | None = None
    allowed = []
    for _ in range(5):
        tat, retry_at = gcra(tat, 100.0, rate)
        allowed.append(retry_at is None)
    assert allowed == [True, True, True, False, False]
    # Refused at 100.0 with a tat of 100.3: the next start fits at 100.3 - 0.2.
    assert gcra(tat, 100.0, rate)[1] == pytest.approx(100.1)
    assert gcra(tat, 100.1, rate)[1] is None


@pytest.mark.parametrize("burst", [1, 5, 20])
def test_no_window_ever_sees_more_than_the_burst_plus_the_rate(burst: int) -> None:
    rate = RateLimit(20, timedelta(seconds=1), burst=burst)
    tat: float | None = None
    starts: list[float] = []
    for step in range(4000):  # a caller every millisecond for 4 s, after a quiet spell
        now = step / 1000
        new, retry_at = gcra(tat, now, rate)
        if retry_at is None:
            tat = new
            starts.append(now)
    busiest = max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts)
    assert busiest <= burst + 20
    assert len(starts) >= 20 * 4 - 1  # and the rate is reached


def test_the_memory_limiter_refills_with_its_clock(clock: ManualClock) -> None:
    limiter = MemoryLimiter(clock=clock)
    rate = parse_rate("2/m")

    answers = [limiter.take("k", rate) for _ in range(3)]
    assert answers[:2] == [Granted(), Granted()]
    assert answers[2] == RateExceeded(retry_at=clock.now() + timedelta(seconds=30))
    clock.advance(30)
    assert limiter.take("k", rate) == Granted()
    assert limiter.take("other", rate) == Granted()  # keys are counted apart


def test_slots_are_limited_released_and_come_back_after_their_lease(clock: ManualClock) -> None:
    limiter = MemoryLimiter(clock=clock, clock_skew=timedelta(seconds=2))
    lease = timedelta(seconds=10)
    first = limiter.acquire("k", 2, lease=lease)
    second = limiter.acquire("k", 2, lease=lease)
    assert isinstance(first, Slot)
    assert isinstance(second, Slot)
    assert limiter.acquire("k", 2, lease=lease) == SlotsFull(lapses_at=clock.now() + timedelta(seconds=12))

    limiter.release("k", first.token)
    assert isinstance(limiter.acquire("k", 2, lease=lease), Slot)

    clock.advance(11)  # the holders died: their leases end, then the skew allowance passes
    assert limiter.renew("k", second.token, lease=lease)  # renewed in time: kept
    clock.advance(2)
    assert limiter.held("k") == 1
    assert isinstance(limiter.acquire("k", 2, lease=lease), Slot)


# -- deferrals -------------------------------------------------------------------------------------


def test_rate_limited_jobs_all_run_spaced_by_the_rate_and_none_is_dead_lettered(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    starts: list[tuple[datetime, int]] = []

    @jobs.job("send-email", rate_limit=RateLimit(1, timedelta(minutes=1), burst=1), max_attempts=1)
    def send(payload: Mail, job: Job) -> None:
        starts.append((backend.now(), job.attempt))

    with jobs.testing(backend):
        for index in range(6):
            send.enqueue(Mail(to=f"{index}@example.com"))
        report = jobs.drain()

    assert report.completed == 6
    assert report.dead_lettered == 0
    assert report.counts["requeued"] > 0  # deferred by re-sent copies
    assert [attempt for _, attempt in starts] == [1] * 6  # no deferral was counted as an attempt
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(starts)]
    assert all(gap >= timedelta(minutes=1) for gap in gaps)


def test_a_deferred_first_attempt_is_re_sent_as_the_same_job_and_not_counted(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("send-email", rate_limit=RateLimit(1, timedelta(minutes=1), burst=1))
    def send(payload: Mail) -> None: ...

    with jobs.testing(backend):
        send.enqueue(Mail(to="a@example.com"))
        job_id = send.enqueue(Mail(to="b@example.com"))
        consumer = jobs.consumer()
        assert consumer.process(_deliver(backend)) == Completed()
        outcome = consumer.process(_deliver(backend))

    assert isinstance(outcome, Deferred)
    assert outcome.reason == "rate_limited"
    # A minute to the next start, plus at most a second of jitter, in whole seconds.
    assert timedelta(seconds=60) <= outcome.delay <= timedelta(seconds=61)
    assert outcome.requeue is not None
    copy = decode(outcome.requeue.body)
    assert (copy.id, copy.attempt_offset) == (job_id, 0)


def test_a_job_over_its_limit_fails_no_attempt_and_runs_its_attempts_later(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    attempts: dict[str, list[int]] = {}

    @jobs.job("flaky", concurrency_limit=1, max_attempts=2)
    def flaky(payload: Export, job: Job) -> None:
        attempts.setdefault(payload.tenant_id, []).append(job.attempt)
        if job.attempt == 1 and payload.tenant_id == "outer":
            # While this one runs, the other delivery meets the limit, several times.
            applier = OutcomeApplier(backend, backend)
            for _ in range(4):
                inner = consumer.run(_deliver(backend), apply=applier.apply)
                applier.flush()
                assert isinstance(inner, Deferred)
                backend.advance(inner.delay)
        raise RuntimeError("down")

    with jobs.testing(backend):
        flaky.enqueue(Export(tenant_id="outer"))
        flaky.enqueue(Export(tenant_id="inner"))
        consumer = jobs.consumer()
        assert isinstance(consumer.process(_deliver(backend)), Retry)
        report = jobs.drain()

    assert attempts == {"outer": [1, 2], "inner": [1, 2]}
    assert [outcome.reason for _, outcome in report.outcomes if isinstance(outcome, DeadLetter)] == [
        "max_attempts",
        "max_attempts",
    ]


class _Exit(BaseException):
    pass


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (None, Completed),
        (ValueError("boom"), Retry),
        (PermanentError("never"), DeadLetter),
        (SystemExit(3), Retry),
        (KeyboardInterrupt(), Retry),
        (_Exit(), Retry),
    ],
)
def test_the_slot_is_given_back_whatever_the_handler_did(
    jobs: CloudJobs, backend: MemoryBackend, raised: BaseException | None, expected: type[Outcome]
) -> None:
    @jobs.job("export", concurrency_limit=1)
    def export(payload: Export) -> None:
        if raised is not None:
            raise raised

    @jobs.job("after", concurrency_limit=1)
    def after(payload: Export) -> None: ...

    with jobs.testing(backend):
        export.enqueue(Export(tenant_id="t"))
        export.enqueue(Export(tenant_id="t"))
        consumer = jobs.consumer()
        first = consumer.process(_deliver(backend))
        second = consumer.process(_deliver(backend))

    assert isinstance(first, expected)
    assert isinstance(second, expected)  # not deferred: the first gave its slot back


def test_an_async_handler_gives_its_slot_back_when_it_raises(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("export", concurrency_limit=1)
    async def export(payload: Export) -> None:
        await asyncio.sleep(0)
        raise SystemExit(1)

    with jobs.testing(backend):
        export.enqueue(Export(tenant_id="t"))
        export.enqueue(Export(tenant_id="t"))
        consumer = jobs.consumer()
        outcomes = [consumer.process(_deliver(backend)) for _ in range(2)]

    assert all(isinstance(outcome, Retry) for outcome in outcomes)


def test_the_slot_is_given_back_when_the_rate_defers_and_when_the_idempotency_lease_defers(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    store = MemoryIdempotencyStore(clock=clock)
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock, idempotency_store=store)
    ran: list[str] = []

    @jobs.job(
        "export", concurrency_limit=1, rate_limit=RateLimit(1, timedelta(hours=1), burst=1), idempotent=True
    )
    def export(payload: Export, job: Job) -> None:
        ran.append(payload.tenant_id)

    with jobs.testing(backend):
        export.enqueue(Export(tenant_id="a"))
        export.enqueue(Export(tenant_id="b"))
        consumer = jobs.consumer()
        assert consumer.process(_deliver(backend)) == Completed()
        deferred = consumer.process(_deliver(backend))
        assert isinstance(deferred, Deferred)
        assert deferred.reason == "rate_limited"
        limiter = jobs._limiter
        assert isinstance(limiter, MemoryLimiter)
        assert limiter.held(concurrency_key("export", None)) == 0

    assert ran == ["a"]
    assert store.records()[0].attempts == 1  # the deferred job took no idempotency lease


def test_limits_are_counted_per_key(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("export", concurrency_limit=1, limit_key="tenant_id")
    def export(payload: Export) -> None:
        other = consumer.process(_deliver(backend))
        outcomes.append(other)

    outcomes: list[Outcome] = []
    with jobs.testing(backend):
        export.enqueue(Export(tenant_id="acme"))
        export.enqueue(Export(tenant_id="globex"))
        export.enqueue(Export(tenant_id="acme", n=1))
        consumer = jobs.consumer()
        consumer.process(_deliver(backend))

    # acme ran; inside it globex ran (its own slot), and inside that the second acme was deferred
    # (the innermost outcome is recorded first).
    deferred, completed = outcomes
    assert isinstance(deferred, Deferred)
    assert deferred.reason == "concurrency_limited"
    assert isinstance(completed, Completed)


def test_a_limit_key_function_that_fails_dead_letters_the_job(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("export", concurrency_limit=1, limit_key=lambda payload: payload["tenant"]["id"])
    def export(payload: dict[str, Any]) -> None: ...

    with jobs.testing(backend):
        export.enqueue({"tenant": None})
        outcome = jobs.consumer().process(_deliver(backend))

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "invalid_payload"
    assert "limit key" in outcome.error


def test_deferrals_are_counted_by_job_type_and_limit_kind(
    jobs: CloudJobs, backend: MemoryBackend, otel: Capture
) -> None:
    @jobs.job("metered-send", rate_limit=RateLimit(1, timedelta(minutes=1), burst=1))
    def send(payload: Mail) -> None: ...

    with jobs.testing(backend):
        for index in range(3):
            send.enqueue(Mail(to=f"{index}@example.com"))
        report = jobs.drain()

    deferrals = sum(1 for _, outcome in report.outcomes if isinstance(outcome, Deferred))
    assert deferrals >= 2
    labels = {"cloudjobs.job.type": "metered-send"}
    assert otel.value("cloudjobs.limit.deferred", **labels, **{"cloudjobs.limit.kind": "rate"}) == deferrals
    assert otel.value("cloudjobs.limit.deferred", **labels, **{"cloudjobs.limit.kind": "concurrency"}) == 0


# -- the worker ------------------------------------------------------------------------------------


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def test_a_limited_type_does_not_block_other_types_in_the_worker(gate: threading.Event) -> None:
    backend = MemoryBackend("jobs")
    jobs = CloudJobs(settings=Settings(_env_file=None, wait_time_seconds=1), backend=backend)
    others: list[str] = []
    started = threading.Event()

    @jobs.job("export", concurrency_limit=1)
    def export(payload: Export) -> None:
        started.set()
        gate.wait(20)

    @jobs.job("ping")
    def ping(payload: Mail) -> None:
        others.append(payload.to)

    with jobs.testing(backend):
        export.enqueue_many([Export(tenant_id="t", n=n) for n in range(6)])
        worker = jobs.worker(concurrency=2, prefetch=10, queue_metrics_interval=None)
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            assert started.wait(20)
            ping.enqueue_many([Mail(to=str(n)) for n in range(5)])
            deadline = time.monotonic() + 20
            while len(others) < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            # Five others ran on the second slot while the first export still holds the first.
            assert len(others) == 5
            assert not gate.is_set()
        finally:
            gate.set()
            worker.stop()
            thread.join(20)


# -- the Lambda runtime and the lean import path ----------------------------------------------------


def test_a_limited_record_in_lambda_is_deferred_by_a_copy_and_acknowledged(clock: ManualClock) -> None:
    from tests.unit.test_aws_lambda import FakeContext, event_of, receive_all

    backend = MemoryBackend("jobs", clock=clock)
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=MemoryIdempotencyStore(clock=clock),
    )
    ran: list[str] = []

    @jobs.job("send-email", rate_limit=RateLimit(1, timedelta(minutes=1), burst=1))
    def send(payload: Mail) -> None:
        ran.append(payload.to)

    send.enqueue(Mail(to="a@example.com"))
    send.enqueue(Mail(to="b@example.com"))
    handler = jobs.lambda_handler()
    try:
        response = handler(event_of(receive_all(backend)), FakeContext())
    finally:
        handler.close()

    assert ran == ["a@example.com"]
    # The limited record is not reported (Lambda deletes it): its copy waits out the minute.
    assert response == {"batchItemFailures": []}
    [copy] = [message for message in backend.messages() if message.receive_count == 0]
    assert decode(copy.body).payload == {"to": "b@example.com"}
    assert timedelta(seconds=60) <= copy.visible_at - backend.now() <= timedelta(seconds=61)


@pytest.mark.parametrize(
    ("options", "expected"),
    [("", []), ("rate_limit='1/s'", ["cloudjobs.limits.middleware", "cloudjobs.limits.spec"])],
    ids=["without-limits", "with-a-limit"],
)
def test_only_an_app_with_limits_imports_the_limits_package(options: str, expected: list[str]) -> None:
    script = (
        "import json, sys\n"
        "import cloudjobs, cloudjobs.runtimes.aws_lambda\n"
        "jobs = cloudjobs.CloudJobs(backend=cloudjobs.MemoryBackend('jobs'),"
        " idempotency_store=cloudjobs.MemoryIdempotencyStore())\n"
        f"jobs.job('noop', {options})(lambda payload: None)\n"
        "jobs.lambda_handler().close()\n"
        "jobs.consumer()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cloudjobs.limits'))))\n"
    )

    stdout = run_fresh(script)

    loaded = json.loads(stdout)
    assert [module for module in expected if module not in loaded] == []
    assert bool(loaded) == bool(expected)
    assert "cloudjobs.limits.dynamodb" not in loaded  # a memory store needs no boto3


class _Lines(logging.Handler):
    """Sets ``event`` when a log line containing ``text`` is emitted."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_sync_handler_past_its_timeout_keeps_its_slot_until_it_returns(gate: threading.Event) -> None:
    backend = MemoryBackend("jobs")
    jobs = CloudJobs(settings=Settings(_env_file=None, wait_time_seconds=1), backend=backend)
    ran: list[tuple[str, float]] = []
    first_started = threading.Event()

    @jobs.job("export", concurrency_limit=1, timeout=0.2, max_attempts=1)
    def export(payload: Export) -> None:
        if payload.n == 0:
            first_started.set()
            gate.wait(20)
        ran.append((payload.tenant_id, time.monotonic()))

    timed_out = _Lines("passed its timeout")
    deferred = _Lines("deferred")
    consumer_logger, limits_logger = (
        logging.getLogger("cloudjobs.consumer"),
        logging.getLogger("cloudjobs.limits"),
    )
    consumer_logger.addHandler(timed_out)
    limits_logger.addHandler(deferred)
    level = limits_logger.level
    limits_logger.setLevel(logging.DEBUG)
    try:
        with jobs.testing(backend):
            export.enqueue(Export(tenant_id="first", n=0))
            worker = jobs.worker(concurrency=2, prefetch=10, queue_metrics_interval=None)
            thread = threading.Thread(target=worker.run)
            thread.start()
            try:
                assert first_started.wait(20)
                assert timed_out.event.wait(20)
                export.enqueue(Export(tenant_id="second", n=1))
                assert deferred.event.wait(20)  # the timed-out run still holds the only slot
                released_at = time.monotonic()
                gate.set()
                deadline = time.monotonic() + 20
                while len(ran) < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                gate.set()
                worker.stop()
                thread.join(20)
    finally:
        consumer_logger.removeHandler(timed_out)
        limits_logger.removeHandler(deferred)
        limits_logger.setLevel(level)

    assert [tenant for tenant, _ in ran] == ["first", "second"]
    assert ran[1][1] >= released_at


def test_a_wait_longer_than_sqs_delays_is_re_sent_every_fifteen_minutes_until_it_fits(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    starts: list[tuple[datetime, int]] = []

    @jobs.job("report", rate_limit="1/h")
    def report(payload: Mail, job: Job) -> None:
        starts.append((backend.now(), job.attempt))

    with jobs.testing(backend):
        report.enqueue(Mail(to="a"))
        report.enqueue(Mail(to="b"))
        drained = jobs.drain()

    assert drained.completed == 2
    assert drained.dead_lettered == 0
    assert drained.counts["requeued"] == 4  # at 0, 15, 30 and 45 minutes
    (first, _), (second, attempt) = starts
    assert timedelta(hours=1) <= second - first <= timedelta(hours=1, seconds=61)
    assert attempt == 1
