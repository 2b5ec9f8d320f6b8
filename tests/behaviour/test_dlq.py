"""Operating the dead-letter queue (``jobs.dlq``), stated once and run on memory and on SQS over HTTP."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, PermanentError
from cloudjobs.backends.base import (
    Backend,
    DeadLetterAdmin,
    Delivery,
    OutgoingMessage,
    QueueCounts,
    QueueInfo,
    SendResult,
)
from cloudjobs.dlq import DeadLetterQueue, Progress, RedriveStop
from cloudjobs.envelope import decode
from tests.behaviour.conftest import Harness, running, wait_for


class Order(BaseModel):
    order_id: int


def _invalid_payload_body() -> str:
    return json.dumps(
        {
            "cloudjobs": 1,
            "id": "raw-1",
            "type": "charge",
            "payload": {"order_id": "seven"},
            "correlation_id": "c-1",
            "enqueued_at": "2026-01-01T00:00:00Z",
        }
    )


def _dead_letter(jobs: CloudJobs, count: int) -> None:
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["dead_lettered"] == count, message=f"{count} dead letters")


def _dead_letter_counts(jobs: CloudJobs) -> QueueCounts | None:
    backend = jobs.backend
    assert isinstance(backend, DeadLetterAdmin)
    return backend.dead_letter_message_counts()


def test_list_shows_why_each_message_failed_and_leaves_them_all_visible_in_the_dlq(harness: Harness) -> None:
    jobs = harness.app()

    @jobs.job("charge")
    def charge(payload: Order) -> None:
        raise PermanentError(f"order {payload.order_id}: card declined")

    job_id = charge.enqueue(Order(order_id=7))
    jobs.backend.send([OutgoingMessage(body=_invalid_payload_body()), OutgoingMessage(body="not json")])
    _dead_letter(jobs, 3)

    first = {job.reason: job for job in jobs.dlq.list()}
    second = jobs.dlq.list()

    assert set(first) == {"permanent_error", "invalid_payload", "unroutable"}
    assert first["permanent_error"].job_id == job_id
    assert first["permanent_error"].attempts == 1
    assert "card declined" in (first["permanent_error"].error or "")
    assert first["invalid_payload"].type == "charge"
    assert first["unroutable"].body == "not json"
    assert sorted(job.message_id for job in second) == sorted(job.message_id for job in first.values())
    wait_for(
        lambda: _dead_letter_counts(jobs) == QueueCounts(visible=3, in_flight=0, delayed=0),
        message="all three visible in the DLQ",
    )


@dataclass
class _Scenario:
    """Two ``charge`` jobs (which fail until ``fixed``) and one ``ship`` job, all dead-lettered."""

    jobs: CloudJobs
    charge_ids: list[str]
    fixed: bool = False
    runs: list[tuple[str, int, int]] = field(default_factory=list)


def _two_types_dead_lettered(harness: Harness) -> _Scenario:
    jobs = harness.app()
    scenario = _Scenario(jobs, [])

    @jobs.job("charge")
    def charge(payload: Order, job: Job) -> None:
        if not scenario.fixed:
            raise PermanentError("card declined")
        scenario.runs.append((job.id, job.attempt, job.envelope.redrive_count))

    @jobs.job("ship")
    def ship(payload: Order) -> None:
        raise PermanentError("no address")

    scenario.charge_ids = [charge.enqueue(Order(order_id=1)), charge.enqueue(Order(order_id=2))]
    ship.enqueue(Order(order_id=3))
    _dead_letter(jobs, 3)
    return scenario


def test_redrive_by_type_moves_exactly_the_matching_jobs_which_then_succeed_once_fixed(
    harness: Harness,
) -> None:
    scenario = _two_types_dead_lettered(harness)
    jobs = scenario.jobs

    report = jobs.dlq.redrive(job_type="charge")
    scenario.fixed = True
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["completed"] == 2, message="the redriven jobs to succeed")

    assert (report.moved, report.skipped, report.failed) == (2, 1, 0)
    # Same job ids, attempts restarted at 1, one redrive recorded.
    assert sorted(scenario.runs) == sorted((job_id, 1, 1) for job_id in scenario.charge_ids)
    assert [job.type for job in jobs.dlq.list()] == ["ship"]


def test_redrive_without_filters_moves_everything_back(harness: Harness) -> None:
    # On SQS over moto this is the fallback: moto has no move tasks, so messages are received and sent.
    scenario = _two_types_dead_lettered(harness)
    jobs = scenario.jobs

    report = jobs.dlq.redrive()

    assert (report.moved, report.failed) == (3, 0)
    assert jobs.dlq.list() == []
    received: dict[str, str] = {}

    def all_back() -> bool:
        for delivery in jobs.backend.receive(max_messages=10, wait=timedelta(seconds=1)):
            received[delivery.message_id] = decode(delivery.body).id
        return len(received) >= 3

    wait_for(all_back, message="three jobs back on the source queue")
    assert len(received) == 3
    assert set(received.values()) >= set(scenario.charge_ids)


def test_a_redrive_with_a_worker_running_and_the_handler_still_failing_moves_each_job_once(
    harness: Harness,
) -> None:
    jobs = harness.app()
    runs: Counter[str] = Counter()

    @jobs.job("charge")
    def charge(payload: Order, job: Job) -> None:
        runs[job.id] += 1
        raise PermanentError("card declined")

    job_ids = [charge.enqueue(Order(order_id=n)) for n in range(3)]
    _dead_letter(jobs, 3)

    with running(jobs) as worker:

        def after_each_step(progress: Progress) -> None:
            if progress.done > len(job_ids):
                pytest.fail(f"the redrive moved {progress.done} messages: it is moving its own copies again")
            # Let the worker fail every copy moved so far before the redrive reads on, so the DLQ
            # holds them again: the redrive must meet its own copies and stop, not move them again.
            wait_for(
                lambda: worker.counts["dead_lettered"] >= progress.done,
                message="the redriven copies back in the DLQ",
            )

        report = jobs.dlq.redrive(on_progress=after_each_step)

    assert (report.moved, report.returned, report.failed) == (3, 3, 0)
    assert report.stop is RedriveStop.MET_OWN_MESSAGES
    # One run before the redrive, one after it: the redrive moved each job once.
    assert runs == {job_id: 2 for job_id in job_ids}
    left = jobs.dlq.list()
    assert sorted(job.job_id or "" for job in left) == sorted(job_ids)
    assert {job.redrive_count for job in left} == {1}


class _InterruptedError(Exception):
    """Stands for an operator stopping a redrive half-way (Ctrl-C, a lost terminal)."""


def _interrupt(progress: Progress) -> None:
    raise _InterruptedError


def test_a_redrive_interrupted_half_way_can_be_run_again_and_moves_each_job_once(harness: Harness) -> None:
    jobs = harness.app()

    @jobs.job("charge")
    def charge(payload: Order) -> None:
        raise PermanentError("card declined")

    job_ids = [charge.enqueue(Order(order_id=n)) for n in range(3)]
    _dead_letter(jobs, 3)

    with pytest.raises(_InterruptedError):
        jobs.dlq.redrive(rate=2, on_progress=_interrupt)  # two a step: interrupted after the first
    again = jobs.dlq.redrive()

    assert 1 <= again.moved <= 2
    assert (again.failed, again.stop) == (0, RedriveStop.DRAINED)
    assert jobs.dlq.list() == []
    received: dict[str, str] = {}

    def all_back() -> bool:
        for delivery in jobs.backend.receive(max_messages=10, wait=timedelta(seconds=1)):
            received[delivery.message_id] = decode(delivery.body).id
        return len(received) >= len(job_ids)

    wait_for(all_back, message="every job back on the source queue")
    assert sorted(received.values()) == sorted(job_ids)


def test_purge_with_a_filter_removes_only_the_matching_jobs(harness: Harness) -> None:
    jobs = _two_types_dead_lettered(harness).jobs

    deleted = jobs.dlq.purge(job_type="charge")

    assert deleted == 2
    assert [job.type for job in jobs.dlq.list()] == ["ship"]


class _SimulatedCrashError(Exception):
    """Stands for the process dying between the send and the delete."""


class _CrashBeforeDelete:
    """A backend whose DLQ delete never happens: the redrive dies right after its send."""

    def __init__(self, inner: Backend) -> None:
        assert isinstance(inner, DeadLetterAdmin)
        self._inner = inner
        self._admin: DeadLetterAdmin = inner

    def info(self) -> QueueInfo:
        return self._inner.info()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return self._inner.send(messages)

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        return self._inner.receive(max_messages=max_messages, wait=wait, visibility=visibility)

    def delete(self, receipts: Sequence[str]) -> list[str]:
        return self._inner.delete(receipts)

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        return self._inner.change_visibility(changes)

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        self._inner.dead_letter(delivery, attributes)

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        return self._admin.receive_dead_letters(max_messages=max_messages, visibility=visibility)

    def change_dead_letter_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        return self._admin.change_dead_letter_visibility(changes)

    def delete_dead_letters(self, receipts: Sequence[str]) -> list[str]:
        raise _SimulatedCrashError

    def purge_dead_letters(self) -> None:
        self._admin.purge_dead_letters()

    def dead_letter_message_counts(self) -> QueueCounts | None:
        return self._admin.dead_letter_message_counts()


def test_a_crash_between_send_and_delete_loses_nothing(harness: Harness) -> None:
    jobs = harness.app()

    @jobs.job("charge")
    def charge(payload: Order) -> None:
        raise PermanentError("card declined")

    job_id = charge.enqueue(Order(order_id=1))
    _dead_letter(jobs, 1)

    with pytest.raises(_SimulatedCrashError):
        DeadLetterQueue(_CrashBeforeDelete(jobs.backend)).redrive(job_type="charge")

    [in_source] = jobs.backend.receive(max_messages=10, wait=timedelta(seconds=1))
    assert decode(in_source.body).id == job_id
    assert [job.job_id for job in jobs.dlq.list()] == [job_id]
