"""The self-hosted scheduler on the memory store with a manual clock: one fire per tick across
schedulers, takeover of a dead scheduler's claim, misfire grace and catch-up, overlap, failures."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from cloudjobs import CloudJobs, Job, ManualClock, MemoryBackend, MemoryIdempotencyStore, Settings
from cloudjobs.envelope import decode
from cloudjobs.errors import BackendError
from cloudjobs.scheduling.definition import Schedule
from cloudjobs.scheduling.memory import MemoryScheduleStore
from cloudjobs.scheduling.scheduler import DEFAULT_CLAIM_LEASE, Scheduler
from cloudjobs.scheduling.state import ScheduleState, TickClaim, TickState
from tests.otel import Capture

START = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
SKEW = timedelta(seconds=2)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock)


@pytest.fixture
def app(clock: ManualClock, store: MemoryIdempotencyStore) -> CloudJobs:
    """An app on a memory queue and store, with a plain job, a tracked one and an idempotent one."""
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=MemoryBackend("jobs", clock=clock),
        clock=clock,
        idempotency_store=store,
    )

    @jobs.job("plain")
    def plain(payload: dict[str, object]) -> None: ...

    @jobs.job("tracked", track_status=True)
    def tracked(payload: dict[str, object]) -> None: ...

    return jobs


def queued_job_ids(jobs: CloudJobs) -> list[str]:
    """The job ids of every message in the app's queue, in send order."""
    backend = jobs.backend
    assert isinstance(backend, MemoryBackend)
    return [decode(message.body).id for message in backend.messages()]


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_a_due_tick_fires_one_job_whose_id_is_made_of_the_tick(app: CloudJobs) -> None:
    app.schedule("sweep", every=60, job_type="plain", payload={"deep": True})
    scheduler = app.scheduler()

    report = scheduler.run_pending(at(60))

    assert [fired.job_id for fired in report.fired] == ["schedule:sweep@2026-06-01T12:01:00Z"]
    assert queued_job_ids(app) == ["schedule:sweep@2026-06-01T12:01:00Z"]
    assert report.next_wakeup == at(120)


def test_nothing_fires_between_ticks(app: CloudJobs) -> None:
    app.schedule("sweep", every=60, job_type="plain")
    scheduler = app.scheduler()
    scheduler.run_pending(at(60))

    report = scheduler.run_pending(at(90))

    assert report.fired == ()
    assert queued_job_ids(app) == ["schedule:sweep@2026-06-01T12:01:00Z"]


def test_two_schedulers_sharing_a_store_fire_each_tick_once(app: CloudJobs) -> None:
    app.schedule("sweep", every=2, job_type="plain")
    first, second = app.scheduler(), app.scheduler()

    for seconds in range(0, 20, 1):
        for scheduler in (first, second) if seconds % 3 else (second, first):
            scheduler.run_pending(at(seconds))

    ids = queued_job_ids(app)
    assert Counter(ids).most_common(1)[0][1] == 1
    assert ids == [f"schedule:sweep@2026-06-01T12:00:{seconds:02d}Z" for seconds in range(0, 20, 2)]
    assert first.counts["fired"] + second.counts["fired"] == 10
    assert first.counts["fired"] > 0
    assert second.counts["fired"] > 0


def test_threads_racing_to_claim_one_tick_let_exactly_one_win(clock: ManualClock) -> None:
    store = MemoryScheduleStore(clock=clock)
    barrier = threading.Barrier(16)
    answers: list[TickClaim | ScheduleState] = []

    def claim() -> None:
        barrier.wait()
        answers.append(store.claim_tick("race", at(2), seen=None, lease=timedelta(seconds=10), owner="t"))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(isinstance(answer, TickClaim) for answer in answers) == 1
    assert all(
        isinstance(answer, ScheduleState) and answer.tick == at(2)
        for answer in answers
        if not isinstance(answer, TickClaim)
    )


def test_a_claim_over_an_old_record_is_refused_with_the_record_as_it_is(clock: ManualClock) -> None:
    store = MemoryScheduleStore(clock=clock)
    first = store.claim_tick("s", at(2), seen=None, lease=timedelta(seconds=10), owner="a")
    assert isinstance(first, TickClaim)
    settled = store.settle_tick(first, TickState.FIRED, job_id="job-1")

    stale = store.claim_tick("s", at(4), seen=None, lease=timedelta(seconds=10), owner="b")

    assert stale == settled
    assert settled.last_job_id == "job-1"
    assert settled.last_fired_tick == at(2)


def test_a_scheduler_that_dies_holding_a_claim_is_replaced_after_its_lease_and_fires_the_same_job(
    app: CloudJobs, store: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    app.schedule("sweep", every=60, job_type="plain")
    # A scheduler claimed the tick at 12:01 and died before enqueueing anything.
    clock.advance(60)
    dead = store.claim_tick("sweep", at(60), seen=None, lease=DEFAULT_CLAIM_LEASE, owner="dead:1")
    assert isinstance(dead, TickClaim)
    survivor = app.scheduler()

    while_held = survivor.run_pending(at(61))
    taken_over = survivor.run_pending(at(60) + DEFAULT_CLAIM_LEASE + SKEW + timedelta(milliseconds=1))

    assert while_held.fired == ()
    assert while_held.next_wakeup == at(60) + DEFAULT_CLAIM_LEASE + SKEW
    assert [fired.job_id for fired in taken_over.fired] == ["schedule:sweep@2026-06-01T12:01:00Z"]
    assert survivor.takeover_time == DEFAULT_CLAIM_LEASE + SKEW + timedelta(seconds=1)


def test_an_idempotent_job_sent_twice_by_a_scheduler_that_died_after_its_send_runs_once(
    app: CloudJobs, clock: ManualClock
) -> None:
    runs: list[str] = []

    @app.job("charge", idempotent=True)
    def charge(payload: dict[str, object]) -> None:
        runs.append("ran")

    app.schedule("billing", every=60, job_type="charge")
    crashing = Scheduler(
        app.schedules,
        store=app.idempotency_store,  # type: ignore[arg-type]
        fire=_send_then_die(app._fire_tick),
        status=app.status,
        clock=clock,
    )
    with pytest.raises(SystemExit):
        crashing.run_pending(at(60))
    survivor = app.scheduler()

    survivor.run_pending(at(60) + DEFAULT_CLAIM_LEASE + SKEW + timedelta(seconds=1))
    sent = queued_job_ids(app)
    app.drain()

    assert sent == ["schedule:billing@2026-06-01T12:01:00Z"] * 2
    assert runs == ["ran"]


def _send_then_die(fire: Callable[[Schedule, datetime], str]) -> Callable[[Schedule, datetime], str]:
    def send_then_die(schedule: Schedule, tick: datetime) -> str:
        fire(schedule, tick)
        raise SystemExit("killed after the send")

    return send_then_die


def test_a_tick_fired_late_within_the_misfire_grace_still_fires(app: CloudJobs) -> None:
    app.schedule("sweep", every=60, job_type="plain", misfire_grace=30)
    scheduler = app.scheduler()
    scheduler.run_pending(at(60))

    report = scheduler.run_pending(at(120 + 29))

    assert [fired.tick for fired in report.fired] == [at(120)]


def test_ticks_missed_beyond_the_grace_are_counted_and_logged_not_fired(
    app: CloudJobs, otel: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    app.schedule("missed-skip", every=60, job_type="plain", misfire_grace=30)
    scheduler = app.scheduler()
    scheduler.run_pending(at(60))

    with caplog.at_level(logging.WARNING, logger="cloudjobs.scheduler"):
        report = scheduler.run_pending(at(600 + 10))

    # 12:02 to 12:09 are over 30 s late; 12:10 is 10 s late: it fires.
    assert report.missed == 8
    assert [fired.tick for fired in report.fired] == [at(600)]
    assert otel.value("cloudjobs.schedule.missed", **{"cloudjobs.schedule.name": "missed-skip"}) == 8
    assert "missed 8 ticks from 2026-06-01T12:02:00+00:00 to 2026-06-01T12:09:00+00:00" in caplog.text


def test_catch_up_once_fires_the_latest_missed_tick_once(app: CloudJobs) -> None:
    app.schedule("nightly", cron="0 2 * * *", job_type="plain", catch_up="once")
    scheduler = app.scheduler()
    scheduler.run_pending(datetime(2026, 6, 2, 2, 0, 5, tzinfo=UTC))

    report = scheduler.run_pending(datetime(2026, 6, 5, 12, 0, tzinfo=UTC))

    assert [fired.job_id for fired in report.fired] == ["schedule:nightly@2026-06-05T02:00:00Z"]
    assert report.missed == 2


def test_a_new_schedule_fires_its_latest_tick_when_within_the_grace_and_nothing_older(app: CloudJobs) -> None:
    app.schedule("sweep", every=2, job_type="plain")
    app.schedule("nightly", cron="0 2 * * *", job_type="plain")
    scheduler = app.scheduler()

    report = scheduler.run_pending(at(21))

    assert [fired.job_id for fired in report.fired] == ["schedule:sweep@2026-06-01T12:00:20Z"]
    assert report.missed == 0


def test_overlap_skip_skips_ticks_while_the_previous_run_is_pending_or_running(
    app: CloudJobs, otel: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    started, release = threading.Event(), threading.Event()

    @app.job("slow", track_status=True)
    def slow(payload: dict[str, object]) -> None:
        started.set()
        release.wait(timeout=10)

    app.schedule("overlap-skip", every=60, job_type="slow", overlap="skip")
    scheduler = app.scheduler()
    caplog.set_level(logging.INFO, logger="cloudjobs.scheduler")
    first = scheduler.run_pending(at(60)).fired[0].job_id

    while_pending = scheduler.run_pending(at(120))
    consumer = app.consumer()
    [delivery] = app.backend.receive(max_messages=1, wait=timedelta(0))
    running = threading.Thread(target=consumer.run, args=(delivery,))
    running.start()
    assert started.wait(timeout=10)
    while_running = scheduler.run_pending(at(180))
    release.set()
    running.join(timeout=10)
    after_it = scheduler.run_pending(at(240))

    assert [skipped.previous_job_id for skipped in while_pending.skipped_overlap] == [first]
    assert [skipped.tick for skipped in while_running.skipped_overlap] == [at(180)]
    assert [fired.tick for fired in after_it.fired] == [at(240)]
    assert (
        otel.value("cloudjobs.schedule.skipped_overlap", **{"cloudjobs.schedule.name": "overlap-skip"}) == 2
    )
    assert f"skipped tick 2026-06-01T12:02:00+00:00: its previous run {first} is still pending" in caplog.text
    assert f"skipped tick 2026-06-01T12:03:00+00:00: its previous run {first} is still running" in caplog.text
    assert scheduler.counts == {"fired": 2, "skipped_overlap": 2, "missed": 0, "failed": 0}


def test_overlap_allow_fires_while_the_previous_run_is_still_pending(app: CloudJobs) -> None:
    app.schedule("sweep", every=60, job_type="tracked")
    scheduler = app.scheduler()
    scheduler.run_pending(at(60))

    report = scheduler.run_pending(at(120))

    assert [fired.tick for fired in report.fired] == [at(120)]
    assert len(queued_job_ids(app)) == 2


def test_a_failed_enqueue_is_tried_again_after_a_backoff_under_the_same_job_id(
    app: CloudJobs, clock: ManualClock
) -> None:
    app.schedule("sweep", every=60, job_type="plain")
    attempts: list[str] = []

    def flaky(schedule: Schedule, tick: datetime) -> str:
        attempts.append(schedule.job_id(tick))
        if len(attempts) == 1:
            raise BackendError("the queue refused", queue="jobs")
        return app._fire_tick(schedule, tick)

    scheduler = Scheduler(
        app.schedules,
        store=app.idempotency_store,  # type: ignore[arg-type]
        fire=flaky,
        status=app.status,
        clock=clock,
    )

    failed = scheduler.run_pending(at(60))
    too_soon = scheduler.run_pending(at(60.5))
    retried = scheduler.run_pending(at(61))

    assert (failed.failed, failed.next_wakeup) == (1, at(61))
    assert too_soon.fired == ()
    assert [fired.job_id for fired in retried.fired] == attempts[:1]
    assert attempts == ["schedule:sweep@2026-06-01T12:01:00Z"] * 2


def test_a_schedule_whose_store_fails_is_logged_and_the_others_still_fire(
    app: CloudJobs, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    from cloudjobs.errors import IdempotencyStoreError

    app.schedule("broken", every=60, job_type="plain")
    app.schedule("fine", every=60, job_type="plain")
    real = MemoryScheduleStore(clock=clock)

    class HalfBroken:
        def schedule_state(self, schedule: str) -> ScheduleState | None:
            if schedule == "broken":
                raise IdempotencyStoreError("unreachable", key=schedule)
            return real.schedule_state(schedule)

        def claim_tick(
            self, schedule: str, tick: datetime, *, seen: ScheduleState | None, lease: timedelta, owner: str
        ) -> TickClaim | ScheduleState:
            return real.claim_tick(schedule, tick, seen=seen, lease=lease, owner=owner)

        def settle_tick(
            self, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
        ) -> ScheduleState:
            return real.settle_tick(claim, outcome, job_id=job_id)

    scheduler = app.scheduler(store=HalfBroken())

    with caplog.at_level(logging.WARNING, logger="cloudjobs.scheduler"):
        report = scheduler.run_pending(at(60))

    assert [fired.schedule for fired in report.fired] == ["fine"]
    assert "schedule broken: IdempotencyStoreError: unreachable; trying again shortly" in caplog.text


def test_drain_until_fires_schedules_on_the_queue_clock_and_runs_their_jobs(app: CloudJobs) -> None:
    ran: list[str] = []

    @app.job("report")
    def report(payload: dict[str, str]) -> None:
        ran.append(payload["kind"])

    app.schedule("hourly", cron="0 * * * *", job_type="report", payload={"kind": "hourly"})
    app.schedule("quarter", every=timedelta(minutes=15), job_type="report", payload={"kind": "quarter"})

    result = app.drain(until=timedelta(hours=3))

    assert Counter(ran) == {"hourly": 4, "quarter": 13}  # 12:00 fires at once (new, within the grace)
    assert result.completed == 17
    backend = app.backend
    assert isinstance(backend, MemoryBackend)
    assert backend.now() == at(3 * 3600)


def test_drain_until_skips_the_local_time_that_the_spring_forward_day_lacks(app: CloudJobs) -> None:
    ran: list[str] = []

    @app.job("early-job")
    def early(payload: dict[str, object], job: Job) -> None:
        ran.append(job.id)

    app.schedule("early", cron="30 2 * * *", tz="Europe/Berlin", job_type="early-job")
    backend = app.backend
    assert isinstance(backend, MemoryBackend)
    backend.advance(datetime(2026, 3, 27, tzinfo=UTC) - backend.now())

    app.drain(until=timedelta(days=4))

    assert ran == [
        "schedule:early@2026-03-27T01:30:00Z",  # 02:30 CET
        "schedule:early@2026-03-28T01:30:00Z",
        "schedule:early@2026-03-30T00:30:00Z",  # 02:30 CEST; 29 March has no 02:30
    ]
