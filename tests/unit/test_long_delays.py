"""Delays past 15 minutes and ``run_at``: a job hops until it is due, runs once, and counts its
attempts from its due time (see cloudjobs.hops)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloudjobs import CloudJobs, InvalidDelayError, Job, JobState, ManualClock, MemoryBackend, Settings
from cloudjobs.backends.base import MAX_DELAY, MAX_VISIBILITY, Delivery, QueueInfo
from cloudjobs.envelope import Envelope, decode, encode
from cloudjobs.hops import MAX_SCHEDULE_DELAY, RETENTION_MARGIN, hop
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.outcomes import Deferred, Reason

START = datetime(2026, 12, 1, 12, tzinfo=UTC)


def make_app(clock: ManualClock, backend: MemoryBackend | None = None) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend if backend is not None else MemoryBackend("jobs", clock=clock),
        clock=clock,
        idempotency_store=MemoryIdempotencyStore(clock=clock),
    )


def queue_info(*, max_receive_count: int | None = 5, retention: timedelta | None = None) -> QueueInfo:
    return QueueInfo(
        name="jobs",
        url="memory://jobs",
        is_fifo=False,
        max_message_size=262_144,
        visibility_timeout=timedelta(seconds=30),
        max_receive_count=max_receive_count,
        dead_letter_queue="jobs-dlq",
        retention=retention,
    )


def delayed(
    due_at: datetime, *, receive_count: int = 1, sent_at: datetime = START
) -> tuple[Delivery, Envelope]:
    envelope = Envelope(
        id="job-1",
        type="remind",
        payload={},
        correlation_id="c",
        enqueued_at=START,
        attempt_offset=3,
        due_at=due_at,
    )
    delivery = Delivery(
        message_id="m-1",
        receipt="r-1",
        body=encode(envelope),
        attributes={"cloudjobs.type": "remind"},
        receive_count=receive_count,
        sent_at=sent_at,
        queue="jobs",
    )
    return delivery, envelope


# -- the hop decision ---------------------------------------------------------------------------


def test_a_job_without_a_due_time_runs() -> None:
    delivery, envelope = delayed(START)

    assert hop(delivery, dataclasses.replace(envelope, due_at=None), queue_info(), START) is None


def test_a_job_received_past_its_due_time_takes_a_final_hop_without_delay() -> None:
    delivery, envelope = delayed(START - timedelta(minutes=3))

    outcome = hop(delivery, envelope, queue_info(), START)

    assert isinstance(outcome, Deferred)
    assert outcome.requeue is not None
    assert outcome.requeue.delay == timedelta(0)
    assert decode(outcome.requeue.body).due_at is None


def test_far_from_its_due_time_a_job_hides_until_fifteen_minutes_before_it() -> None:
    delivery, envelope = delayed(START + timedelta(hours=5))

    outcome = hop(delivery, envelope, queue_info(), START)

    assert outcome == Deferred(delay=timedelta(hours=5) - MAX_DELAY, reason=Reason.NOT_DUE)


def test_a_job_days_away_hides_for_at_most_twelve_hours_per_receive() -> None:
    delivery, envelope = delayed(START + timedelta(days=3))

    outcome = hop(delivery, envelope, queue_info(), START)

    assert outcome == Deferred(delay=MAX_VISIBILITY, reason=Reason.NOT_DUE)


def test_within_fifteen_minutes_a_fresh_copy_without_due_time_is_sent_for_the_rest() -> None:
    delivery, envelope = delayed(START + timedelta(seconds=600.2))

    outcome = hop(delivery, envelope, queue_info(), START)

    assert isinstance(outcome, Deferred)
    assert outcome.requeue is not None
    assert outcome.requeue.delay == timedelta(seconds=601)
    copy = decode(outcome.requeue.body)
    assert copy.due_at is None
    assert copy.attempt_offset == 0
    assert copy.id == envelope.id
    assert outcome.requeue.attributes == delivery.attributes


def test_one_receive_short_of_the_redrive_threshold_the_job_is_re_sent_keeping_its_due_time() -> None:
    delivery, envelope = delayed(START + timedelta(days=3), receive_count=4)

    outcome = hop(delivery, envelope, queue_info(max_receive_count=5), START)

    assert isinstance(outcome, Deferred)
    assert outcome.requeue is not None
    assert outcome.requeue.delay == MAX_DELAY
    assert decode(outcome.requeue.body).due_at == envelope.due_at


def test_near_the_retention_period_the_job_is_re_sent() -> None:
    retention = timedelta(days=4)
    old = START - retention + MAX_VISIBILITY
    delivery, envelope = delayed(START + timedelta(days=3), sent_at=old)

    outcome = hop(delivery, envelope, queue_info(retention=retention), START)

    assert isinstance(outcome, Deferred)
    assert outcome.requeue is not None
    young, _ = delayed(START + timedelta(days=3), sent_at=START - RETENTION_MARGIN)
    assert hop(young, envelope, queue_info(retention=retention), START) == Deferred(
        delay=MAX_VISIBILITY, reason=Reason.NOT_DUE
    )


# -- the producer -----------------------------------------------------------------------------


def sent(backend: MemoryBackend) -> list[tuple[timedelta, dict[str, object]]]:
    return [
        (message.visible_at - message.sent_at, json.loads(message.body)) for message in backend.messages()
    ]


def test_a_delay_past_fifteen_minutes_is_sent_with_the_longest_delay_and_its_due_time() -> None:
    clock = ManualClock(START)
    jobs = make_app(clock)

    jobs.enqueue("remind", {}, delay=timedelta(days=3))
    jobs.enqueue("soon", {}, delay=60)

    backend = jobs.backend
    assert isinstance(backend, MemoryBackend)
    [(first_delay, first), (second_delay, second)] = sent(backend)
    assert first_delay == MAX_DELAY
    assert first["due_at"] == "2026-12-04T12:00:00.000000Z"
    assert second_delay == timedelta(seconds=60)
    assert "due_at" not in second


def test_run_at_is_a_delay_from_now_and_in_the_past_runs_now() -> None:
    clock = ManualClock(START)
    jobs = make_app(clock)
    berlin = ZoneInfo("Europe/Berlin")

    jobs.enqueue("remind", {}, run_at=datetime(2026, 12, 24, 9, tzinfo=berlin))
    jobs.enqueue("late", {}, run_at=START - timedelta(hours=1))

    backend = jobs.backend
    assert isinstance(backend, MemoryBackend)
    [(_, remind), (late_delay, late)] = sent(backend)
    assert remind["due_at"] == "2026-12-24T08:00:00.000000Z"
    assert late_delay == timedelta(0)
    assert "due_at" not in late


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"run_at": datetime(2026, 12, 24, 9)}, "timezone-aware"),
        ({"run_at": START + timedelta(days=1), "delay": 60}, "not both"),
        ({"delay": MAX_SCHEDULE_DELAY + timedelta(seconds=1)}, "366 days"),
        ({"delay": -1}, "outside"),
    ],
)
def test_impossible_schedules_are_refused_before_anything_is_sent(
    options: dict[str, object], complaint: str
) -> None:
    clock = ManualClock(START)
    jobs = make_app(clock)

    with pytest.raises(InvalidDelayError, match=complaint):
        jobs.enqueue("remind", {}, **options)  # type: ignore[arg-type]

    assert len(jobs.backend) == 0  # type: ignore[arg-type]


def test_a_fifo_queue_refuses_a_long_delay() -> None:
    clock = ManualClock(START)
    jobs = make_app(clock, MemoryBackend("jobs.fifo", clock=clock))

    with pytest.raises(InvalidDelayError, match="FIFO"):
        jobs.enqueue("remind", {}, delay=timedelta(hours=2))


# -- end to end on the memory queue ------------------------------------------------------------


def test_a_job_delayed_by_days_runs_once_when_due_as_its_first_attempt() -> None:
    clock = ManualClock(START)
    jobs = make_app(clock)
    runs: list[tuple[datetime, int]] = []

    @jobs.job("remind")
    def remind(payload: dict[str, str], job: Job) -> None:
        backend = jobs.backend
        assert isinstance(backend, MemoryBackend)
        runs.append((backend.now(), job.attempt))

    remind.enqueue({}, delay=timedelta(days=3, minutes=7))
    report = jobs.drain()

    [(ran_at, attempt)] = runs
    due = START + timedelta(days=3, minutes=7)
    assert due <= ran_at < due + timedelta(seconds=2)
    assert attempt == 1
    assert report.counts["deferred"] >= 5
    assert report.counts["requeued"] >= 2


def test_attempts_of_a_failing_delayed_job_count_from_its_due_time() -> None:
    clock = ManualClock(START)
    jobs = make_app(clock, MemoryBackend("jobs", clock=clock, max_receive_count=3))
    attempts: list[int] = []

    @jobs.job("remind", max_attempts=3)
    def remind(payload: dict[str, str], job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("mail server down")

    remind.enqueue({}, delay=timedelta(days=2))
    report = jobs.drain()

    assert attempts == [1, 2, 3]
    assert report.dead_lettered == 1


class _CrashAfterSend(MemoryBackend):
    """A queue whose deletes of hop copies are lost once: the crash between a re-send and its delete."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__("jobs", clock=clock)
        self.lost = 0

    def delete(self, receipts: Sequence[str]) -> list[str]:
        if self.lost == 0 and any(self._is_hop(receipt) for receipt in receipts):
            self.lost = len(receipts)
            return []  # as if the process died: the originals come back after their visibility
        return super().delete(receipts)

    def _is_hop(self, receipt: str) -> bool:
        return any(
            message.receipt == receipt and "due_at" in json.loads(message.body) for message in self.messages()
        )


@pytest.mark.parametrize(("idempotent", "expected_runs"), [(True, 1), (False, 2)])
def test_a_crash_between_a_hops_send_and_delete_duplicates_only_plain_jobs(
    idempotent: bool, expected_runs: int
) -> None:
    clock = ManualClock(START)
    backend = _CrashAfterSend(clock)
    jobs = make_app(clock, backend)
    runs: list[str] = []

    @jobs.job("remind", idempotent=idempotent)
    def remind(payload: dict[str, str], job: Job) -> None:
        runs.append(job.id)

    job_id = remind.enqueue({}, delay=timedelta(hours=1))
    jobs.drain()

    assert backend.lost == 1
    assert runs == [job_id] * expected_runs


def test_a_due_time_survives_the_envelope_round_trip() -> None:
    _, envelope = delayed(START + timedelta(days=1))

    assert decode(encode(envelope)) == envelope
    assert decode(encode(dataclasses.replace(envelope, due_at=None))).due_at is None


# -- status -----------------------------------------------------------------------------------


def test_a_tracked_job_reads_scheduled_with_its_due_time_until_it_is_due() -> None:
    clock = ManualClock(START)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, status_tracking=True),
        backend=MemoryBackend("jobs", clock=clock),
        clock=clock,
        idempotency_store=MemoryIdempotencyStore(clock=clock),
    )

    @jobs.job("remind", track_status=True)
    def remind(payload: dict[str, str]) -> None: ...

    job_id = remind.enqueue({}, delay=timedelta(days=10))
    scheduled = jobs.status(job_id)
    clock.advance(timedelta(days=10))
    due = jobs.status(job_id)

    assert scheduled is not None
    assert scheduled.state is JobState.SCHEDULED
    assert scheduled.due_at == START + timedelta(days=10)
    assert not scheduled.is_finished
    assert due is not None
    assert due.state is JobState.PENDING
    # The record outlives its due time by the retention, not just its enqueue.
    assert due.expires_at == START + timedelta(days=10) + timedelta(
        seconds=jobs.settings.idempotency_retention_seconds
    )
