"""jobs.dlq on the memory backend: listing without loss, redrive by receiving, purge."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import (
    BackendError,
    CloudJobs,
    ConfigurationError,
    DeadJob,
    Job,
    ManualClock,
    MemoryBackend,
    PermanentError,
    Settings,
)
from cloudjobs.backends.base import Delivery, OutgoingMessage, QueueCounts
from cloudjobs.dlq import DeadLetterQueue, Progress, RedriveStop
from cloudjobs.dlq.models import FIRST_FAILED_ATTRIBUTE
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE, decode


class Order(BaseModel):
    order_id: int


def _app(backend: MemoryBackend, clock: ManualClock) -> CloudJobs:
    return CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock, random=lambda: 0.5)


def _dlq(backend: MemoryBackend) -> MemoryBackend:
    assert backend.dead_letter_queue is not None
    return backend.dead_letter_queue


def _poison(jobs: CloudJobs, *job_types: str) -> None:
    """Register handlers that always fail permanently under ``job_types``."""
    for job_type in job_types:

        def fail(payload: Order) -> None:
            raise PermanentError(f"order {payload.order_id} is bad")

        jobs.job(job_type)(fail)


def _three_kinds_of_dead_letter(jobs: CloudJobs, backend: MemoryBackend) -> str:
    """A poison job, a payload failing its schema, and an undecodable body, all dead-lettered."""
    _poison(jobs, "charge")
    job_id = jobs.enqueue("charge", Order(order_id=7))
    body = json.dumps(
        {
            "cloudjobs": 1,
            "id": "raw-1",
            "type": "charge",
            "payload": {"order_id": "seven"},
            "correlation_id": "c-1",
            "enqueued_at": "2026-01-01T00:00:00Z",
        }
    )
    backend.send([OutgoingMessage(body=body), OutgoingMessage(body="not json at all")])
    assert jobs.drain().dead_lettered == 3
    return job_id


def test_list_shows_the_reason_error_and_attempts_the_consumer_recorded(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    job_id = _three_kinds_of_dead_letter(jobs, backend)

    listed = {job.reason: job for job in jobs.dlq.list()}

    assert set(listed) == {"permanent_error", "invalid_payload", "unroutable"}
    poison = listed["permanent_error"]
    assert (poison.job_id, poison.type, poison.attempts) == (job_id, "charge", 1)
    assert "order 7 is bad" in (poison.error or "")
    assert poison.last_failed_at == backend.now()
    assert poison.first_failed_at == poison.last_failed_at
    assert (listed["invalid_payload"].job_id, listed["invalid_payload"].type) == ("raw-1", "charge")
    foreign = listed["unroutable"]
    assert (foreign.job_id, foreign.type, foreign.body) == (None, None, "not json at all")


def test_list_deletes_nothing_and_releases_every_message_so_a_second_list_shows_the_same(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    first = jobs.dlq.list()

    assert _dlq(backend).message_counts() == QueueCounts(visible=3, in_flight=0, delayed=0)
    second = jobs.dlq.list()
    assert sorted(job.message_id for job in second) == sorted(job.message_id for job in first)


def test_list_reads_at_most_limit_distinct_messages_and_releases_them(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(15)])
    jobs.drain()

    listed = jobs.dlq.list(limit=12)

    assert len({job.message_id for job in listed}) == 12
    assert _dlq(backend).message_counts().visible == 15


def test_list_filters_by_type_and_by_reason(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    by_type = jobs.dlq.list(job_type="charge")
    by_reason = jobs.dlq.list(reason="unroutable")

    assert sorted(job.reason or "" for job in by_type) == ["invalid_payload", "permanent_error"]
    assert [job.body for job in by_reason] == ["not json at all"]


def test_a_limit_below_one_is_refused(clock: ManualClock, backend: MemoryBackend) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        _app(backend, clock).dlq.list(limit=0)


class _Relapsing(MemoryBackend):
    """A memory queue whose DLQ messages become visible again between two receives of one read."""

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        self.advance(visibility)
        return super().receive_dead_letters(max_messages=max_messages, visibility=visibility)


def test_a_message_received_again_within_one_listing_is_listed_once_and_still_released(
    clock: ManualClock,
) -> None:
    backend = _Relapsing("jobs", clock=clock)
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    listed = DeadLetterQueue(backend).list(limit=2)
    listed_all = DeadLetterQueue(backend).list()

    assert len(listed) == 2
    assert len({job.message_id for job in listed_all}) == 3
    # Released with the newest receipts: a stale one would leave them hidden.
    assert _dlq(backend).message_counts().visible == 3


def test_a_message_moved_by_the_queue_redrive_lists_without_a_recorded_reason(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs", max_receive_count=1, clock=clock)
    jobs = _app(backend, clock)
    job_id = jobs.enqueue("charge", Order(order_id=1))
    backend.receive(max_messages=1, wait=timedelta(0))
    clock.advance(backend.visibility_timeout)
    assert backend.receive(max_messages=1, wait=timedelta(0)) == []  # the queue moved it

    [job] = jobs.dlq.list()

    assert (job.job_id, job.type) == (job_id, "charge")
    assert (job.reason, job.error, job.attempts) == (None, None, None)
    assert (job.first_failed_at, job.last_failed_at) == (None, None)


class _FailingSecondReceive(MemoryBackend):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.receives = 0

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        self.receives += 1
        if self.receives == 2:
            raise BackendError("the DLQ went away", queue=self.name)
        return super().receive_dead_letters(max_messages=max_messages, visibility=visibility)


def test_messages_read_before_an_error_are_released_all_the_same(clock: ManualClock) -> None:
    backend = _FailingSecondReceive("jobs", clock=clock)
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(12)])
    jobs.drain()

    with pytest.raises(BackendError, match="went away"):
        jobs.dlq.list()

    assert _dlq(backend).message_counts() == QueueCounts(visible=12, in_flight=0, delayed=0)


# -- redrive --------------------------------------------------------------------------------------


def test_redrive_by_type_moves_only_matching_jobs_which_then_run_from_attempt_one(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    fixed = False
    runs: list[tuple[str, int, int]] = []

    @jobs.job("charge")
    def charge(payload: Order, job: Job) -> None:
        if not fixed:
            raise PermanentError("card declined")
        runs.append((job.id, job.attempt, job.envelope.redrive_count))

    _poison(jobs, "ship")
    charge_id = charge.enqueue(Order(order_id=1))
    jobs.enqueue("ship", Order(order_id=2))
    jobs.drain()

    report = jobs.dlq.redrive(job_type="charge")
    fixed = True
    drained = jobs.drain()

    assert (report.moved, report.skipped, report.failed) == (1, 1, 0)
    assert [job.job_id for job in report.jobs] == [charge_id]
    assert drained.completed == 1
    assert runs == [(charge_id, 1, 1)]
    assert [job.type for job in jobs.dlq.list()] == ["ship"]


def test_a_redriven_message_keeps_its_attributes_but_not_the_dead_letter_record(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue("charge", Order(order_id=1))
    [message] = backend.messages()
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    traced = {**delivery.attributes, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    backend.dead_letter(
        dataclasses.replace(delivery, attributes=traced),
        {
            DEAD_LETTER_ATTRIBUTE: json.dumps(
                {"reason": "permanent_error", "failed_at": "2026-01-01T00:00:00+00:00"}
            )
        },
    )
    backend.delete([delivery.receipt])

    jobs.dlq.redrive()

    [redriven] = backend.messages()
    envelope = decode(redriven.body)
    assert (envelope.id, envelope.redrive_count, envelope.attempt_offset) == (decode(message.body).id, 1, 0)
    assert DEAD_LETTER_ATTRIBUTE not in redriven.attributes
    assert redriven.attributes["traceparent"] == traced["traceparent"]
    assert redriven.attributes["cloudjobs.correlation_id"] == envelope.correlation_id
    assert redriven.attributes[FIRST_FAILED_ATTRIBUTE] == "2026-01-01T00:00:00+00:00"
    assert len(_dlq(backend)) == 0


def test_a_job_dead_lettered_again_after_a_redrive_keeps_its_first_failure_time(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue("charge", Order(order_id=1))
    jobs.drain()
    first_failure = backend.now()

    jobs.dlq.redrive()
    clock.advance(3600)
    jobs.drain()
    [job] = jobs.dlq.list()

    assert job.first_failed_at == first_failure
    assert job.last_failed_at == first_failure + timedelta(hours=1)
    assert job.redrive_count == 1


def test_a_foreign_body_is_redriven_unchanged(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    report = jobs.dlq.redrive(reason="unroutable")

    assert report.moved == 1
    assert [message.body for message in backend.messages()] == ["not json at all"]


def test_redrive_selects_jobs_by_id(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    ids = jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(4)])
    jobs.drain()

    report = jobs.dlq.redrive(job_ids=[ids[1], ids[3]])

    assert sorted(job.job_id or "" for job in report.jobs) == sorted([ids[1], ids[3]])
    assert sorted(decode(message.body).id for message in backend.messages()) == sorted([ids[1], ids[3]])
    assert len(_dlq(backend)) == 2


def test_a_single_string_of_job_ids_is_refused(clock: ManualClock, backend: MemoryBackend) -> None:
    with pytest.raises(ConfigurationError, match="job_ids"):
        _app(backend, clock).dlq.redrive(job_ids="job-1")


def test_a_dry_run_reports_what_would_move_and_changes_nothing(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    report = jobs.dlq.redrive(job_type="charge", dry_run=True)

    assert (report.moved, report.skipped, report.dry_run) == (2, 1, True)
    assert len(backend) == 0
    assert _dlq(backend).message_counts() == QueueCounts(visible=3, in_flight=0, delayed=0)


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def test_a_rate_limit_spaces_the_sends(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(5)])
    jobs.drain()
    fake = _FakeTime()
    dlq = DeadLetterQueue(backend, sleep=fake.sleep, monotonic=fake.monotonic)

    report = dlq.redrive(rate=2)

    # Batches of two at two a second: the 3rd and 5th messages wait one second each.
    assert report.moved == 5
    assert fake.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]
    assert len(backend) == 5


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_a_rate_that_is_not_positive_is_refused(
    clock: ManualClock, backend: MemoryBackend, rate: float
) -> None:
    with pytest.raises(ConfigurationError, match="rate"):
        _app(backend, clock).dlq.redrive(rate=rate)


def test_progress_is_reported_against_the_depth_at_the_start(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(12)])
    jobs.drain()
    seen: list[Progress] = []

    jobs.dlq.redrive(on_progress=seen.append)

    assert seen == [Progress(done=10, total=12), Progress(done=12, total=12)]


# -- a redrive meets its own copies ---------------------------------------------------------------
# The handler still fails, so every copy a redrive sends back reaches the DLQ again while it runs
# (here ``on_progress`` lets the queue's consumer run between the redrive's steps).


def _poison_dead_lettered(
    backend: MemoryBackend, clock: ManualClock, count: int
) -> tuple[CloudJobs, list[str]]:
    """An app whose ``charge`` always fails, with ``count`` such jobs in the DLQ; and their ids."""
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    ids = jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(count)])
    jobs.drain()
    return jobs, ids


def _consumer_between_steps(jobs: CloudJobs) -> Callable[[Progress], None]:
    def run_the_consumer(progress: Progress) -> None:
        jobs.drain()

    return run_the_consumer


def test_copies_dead_lettered_again_during_a_redrive_are_not_moved_again(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs, ids = _poison_dead_lettered(backend, clock, 12)
    seen: list[Progress] = []

    def run_the_consumer(progress: Progress) -> None:
        seen.append(progress)
        jobs.drain()

    report = jobs.dlq.redrive(on_progress=run_the_consumer)

    # The second read brings the last two of the start and eight copies, set aside; the third, after
    # all twelve of the start were read, brings only copies: the redrive ends there.
    assert (report.moved, report.returned, report.failed) == (12, 12, 0)
    assert report.stop is RedriveStop.MET_OWN_MESSAGES
    assert seen == [Progress(done=10, total=12), Progress(done=12, total=12)]
    left = jobs.dlq.list()
    assert sorted(job.job_id or "" for job in left) == sorted(ids)
    assert {job.redrive_count for job in left} == {1}


def test_a_copy_moved_back_by_the_queues_own_redrive_is_known_too(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    # maxReceiveCount, not the consumer, brings the copy back: the message moves to the DLQ as it is.
    jobs, [job_id] = _poison_dead_lettered(backend, clock, 1)

    def receive_until_redriven(progress: Progress) -> None:
        for _ in range(backend.max_receive_count or 0):
            assert backend.receive(max_messages=10, wait=timedelta(0))
            clock.advance(backend.visibility_timeout.total_seconds())
        assert backend.receive(max_messages=10, wait=timedelta(0)) == []

    report = jobs.dlq.redrive(on_progress=receive_until_redriven)

    assert (report.moved, report.returned, report.stop) == (1, 1, RedriveStop.MET_OWN_MESSAGES)
    [left] = jobs.dlq.list()
    assert (left.job_id, left.redrive_count, left.reason) == (job_id, 1, None)


def test_a_copy_met_before_every_message_of_the_start_was_read_is_set_aside_and_the_redrive_goes_on(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs, (first, *rest) = _poison_dead_lettered(backend, clock, 3)
    # Another reader holds two of the three, so the redrive's first copy comes back before them.
    held = backend.receive_dead_letters(max_messages=10, visibility=timedelta(minutes=1))
    backend.change_dead_letter_visibility(
        [(delivery.receipt, timedelta(0)) for delivery in held if decode(delivery.body).id == first]
    )
    steps: list[Progress] = []

    def step(progress: Progress) -> None:
        steps.append(progress)
        jobs.drain()
        if len(steps) == 2:  # the copy of the first job was met and set aside: let the others go
            backend.change_dead_letter_visibility(
                [(delivery.receipt, timedelta(0)) for delivery in held if decode(delivery.body).id != first]
            )

    report = jobs.dlq.redrive(on_progress=step)

    assert steps == [Progress(done=1, total=3), Progress(done=1, total=3), Progress(done=3, total=3)]
    assert (report.moved, report.returned, report.stop) == (3, 3, RedriveStop.MET_OWN_MESSAGES)
    assert sorted(job.job_id or "" for job in report.jobs) == sorted([first, *rest])
    assert {job.redrive_count for job in jobs.dlq.list()} == {1}


def test_a_filtered_redrive_moves_the_matching_jobs_once_and_leaves_the_rest(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge", "ship")
    charge_ids = jobs.enqueue_many([("charge", Order(order_id=n)) for n in range(2)])
    jobs.enqueue("ship", Order(order_id=3))
    jobs.drain()

    by_type = jobs.dlq.redrive(job_type="charge", on_progress=_consumer_between_steps(jobs))
    by_reason = jobs.dlq.redrive(reason="permanent_error", on_progress=_consumer_between_steps(jobs))

    assert (by_type.moved, by_type.skipped, by_type.returned) == (2, 1, 2)
    assert sorted(job.job_id or "" for job in by_type.jobs) == sorted(charge_ids)
    # A second redrive is a new run: the first one's copies are moved like any other message.
    assert (by_reason.moved, by_reason.skipped, by_reason.returned) == (3, 0, 3)
    assert by_type.stop is by_reason.stop is RedriveStop.MET_OWN_MESSAGES
    assert sorted((job.type or "", job.redrive_count) for job in jobs.dlq.list()) == [
        ("charge", 2),
        ("charge", 2),
        ("ship", 1),
    ]


def test_a_foreign_body_that_comes_back_is_not_moved_again(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    report = jobs.dlq.redrive(reason="unroutable", on_progress=_consumer_between_steps(jobs))

    assert (report.moved, report.returned, report.stop) == (1, 1, RedriveStop.MET_OWN_MESSAGES)
    assert sorted(job.body for job in jobs.dlq.list() if job.reason == "unroutable") == ["not json at all"]


def test_a_redrive_that_meets_none_of_its_copies_reads_the_dlq_to_the_end(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs, _ = _poison_dead_lettered(backend, clock, 3)

    report = jobs.dlq.redrive()

    assert (report.moved, report.returned, report.stop) == (3, 0, RedriveStop.DRAINED)


class _DeleteRefused(MemoryBackend):
    def delete_dead_letters(self, receipts: Sequence[str]) -> list[str]:
        raise BackendError("delete refused", queue=self.name)


def test_a_failed_delete_after_the_send_is_reported_and_leaves_the_job_in_both_queues(
    clock: ManualClock,
) -> None:
    backend = _DeleteRefused("jobs", clock=clock)
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    job_id = jobs.enqueue("charge", Order(order_id=1))
    jobs.drain()

    report = jobs.dlq.redrive()

    assert (report.moved, report.failed, report.is_complete) == (0, 1, False)
    assert "in both queues" in report.errors[0]
    assert [decode(message.body).id for message in backend.messages()] == [job_id]
    assert [job.job_id for job in jobs.dlq.list()] == [job_id]


def test_a_send_the_queue_refuses_is_reported_and_the_message_stays(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    jobs.enqueue("charge", Order(order_id=1))
    jobs.drain()
    backend.max_message_size = 10  # the source queue now refuses the copy

    report = jobs.dlq.redrive()

    assert (report.moved, report.failed) == (0, 1)
    assert "not sent" in report.errors[0]
    assert _dlq(backend).message_counts().visible == 1


# -- purge ----------------------------------------------------------------------------------------


def test_purge_without_filters_empties_the_dlq_and_returns_its_depth(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    assert jobs.dlq.purge() == 3
    assert len(_dlq(backend)) == 0


def test_purge_by_type_deletes_only_that_type(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = _app(backend, clock)
    _three_kinds_of_dead_letter(jobs, backend)

    assert jobs.dlq.purge(job_type="charge") == 2
    assert [job.reason for job in jobs.dlq.list()] == ["unroutable"]


def test_purge_older_than_compares_with_the_last_failure(clock: ManualClock, backend: MemoryBackend) -> None:
    jobs = _app(backend, clock)
    _poison(jobs, "charge")
    old_id = jobs.enqueue("charge", Order(order_id=1))
    jobs.drain()
    clock.advance(timedelta(days=3))
    jobs.enqueue("charge", Order(order_id=2))
    jobs.drain()
    dlq = DeadLetterQueue(backend, clock=backend)

    assert dlq.purge(older_than=timedelta(days=2)) == 1
    assert old_id not in [job.job_id for job in dlq.list()]
    assert dlq.purge(older_than=3600.0) == 0  # the other one failed just now


def test_purge_older_than_never_matches_a_message_without_a_failure_time(clock: ManualClock) -> None:
    backend = MemoryBackend("jobs", max_receive_count=1, clock=clock)
    jobs = _app(backend, clock)
    jobs.enqueue("charge", Order(order_id=1))
    backend.receive(max_messages=1, wait=timedelta(0))
    clock.advance(backend.visibility_timeout)
    backend.receive(max_messages=1, wait=timedelta(0))  # moved to the DLQ, with no record
    clock.advance(timedelta(days=30))

    assert jobs.dlq.purge(older_than=timedelta(days=1)) == 0
    assert len(_dlq(backend)) == 1


def test_a_negative_age_is_refused(clock: ManualClock, backend: MemoryBackend) -> None:
    with pytest.raises(ConfigurationError, match="older_than"):
        _app(backend, clock).dlq.purge(older_than=-1)


def test_a_queue_without_a_dlq_says_so(clock: ManualClock) -> None:
    jobs = _app(MemoryBackend("jobs", max_receive_count=None, clock=clock), clock)

    with pytest.raises(ConfigurationError, match="no dead-letter queue"):
        jobs.dlq.list()
    with pytest.raises(ConfigurationError, match="no dead-letter queue"):
        jobs.dlq.purge()


def test_dead_job_fields_are_in_the_documented_order() -> None:
    job = DeadJob("id", "type", "reason", "error", 2, None, None, "message", "body")

    assert (job.job_id, job.type, job.reason, job.error, job.attempts) == ("id", "type", "reason", "error", 2)
    assert (job.message_id, job.body) == ("message", "body")


@pytest.mark.parametrize("hold", [0, timedelta(hours=13)])
def test_a_hold_outside_one_second_to_twelve_hours_is_refused(
    backend: MemoryBackend, hold: timedelta
) -> None:
    with pytest.raises(ConfigurationError, match="hold"):
        DeadLetterQueue(backend, hold=hold)


def test_a_backend_without_dead_letter_administration_is_refused(backend: MemoryBackend) -> None:
    class PlainBackend:
        """Only the Backend protocol."""

        info = backend.info
        send = backend.send
        receive = backend.receive
        delete = backend.delete
        change_visibility = backend.change_visibility
        dead_letter = backend.dead_letter

    with pytest.raises(ConfigurationError, match="no dead-letter administration"):
        DeadLetterQueue(PlainBackend())
