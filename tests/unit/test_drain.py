"""Outcomes carried out end to end with ``jobs.testing()`` and ``jobs.drain()``, and FIFO order."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from pydantic import BaseModel, JsonValue

from cloudjobs import (
    Backend,
    CloudJobs,
    Completed,
    ConfigurationError,
    DeadLetter,
    Delivery,
    Job,
    ManualClock,
    MemoryBackend,
    PermanentError,
    Released,
    Retry,
    RetryableError,
    Settings,
)
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.envelope import Envelope, encode
from cloudjobs.runtimes.ordering import run_in_order


class Order(BaseModel):
    order_id: int


def _app(clock: ManualClock, backend: MemoryBackend | None = None, **settings: object) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None, **settings),  # type: ignore[arg-type]
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
    )


def _dead_letters(backend: MemoryBackend) -> list[dict[str, JsonValue]]:
    assert backend.dead_letter_queue is not None
    return [
        json.loads(message.attributes["cloudjobs.dead_letter"])
        for message in backend.dead_letter_queue.messages()
    ]


def _send_raw(backend: MemoryBackend, body: str, attributes: dict[str, str] | None = None) -> None:
    [result] = backend.send([OutgoingMessage(body=body, attributes=attributes or {})])
    assert result.is_sent, result.error


def _envelope_body(job_type: str, payload: JsonValue, job_id: str = "job-1") -> str:
    return encode(
        Envelope(
            id=job_id,
            type=job_type,
            payload=payload,
            correlation_id="corr-1",
            enqueued_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
    )


def test_a_completed_job_is_deleted_and_reported_with_its_result(clock: ManualClock) -> None:
    jobs = _app(clock)

    @jobs.job("double")
    def double(payload: Order) -> int:
        return payload.order_id * 2

    with jobs.testing() as backend:
        job_ids = [jobs.enqueue("double", {"order_id": 4})]
        report = jobs.drain()

        assert len(backend) == 0
        assert backend.dead_letter_queue is not None
        assert len(backend.dead_letter_queue) == 0

    assert report.completed == 1
    assert report.outcomes == [(report.outcomes[0][0], Completed(result=8))]
    assert len(job_ids) == 1


def test_testing_swaps_in_a_memory_queue_and_restores_the_backend_afterwards(clock: ManualClock) -> None:
    original = MemoryBackend("original", clock=clock)
    jobs = _app(clock, original)

    with jobs.testing() as backend:
        assert jobs.backend is backend
        assert backend is not original

    assert jobs.backend is original


def test_testing_without_settings_uses_defaults_and_forgets_them_afterwards(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    jobs = CloudJobs(clock=clock)

    with jobs.testing():
        inside = jobs.settings
    monkeypatch.setenv("CLOUDJOBS_MAX_ATTEMPTS", "2")

    assert inside.max_attempts == 5
    assert jobs.settings.max_attempts == 2


def test_testing_runs_on_the_backend_it_is_given(clock: ManualClock) -> None:
    jobs = _app(clock)
    fifo = MemoryBackend("orders.fifo", clock=clock)

    with jobs.testing(fifo) as backend:
        assert backend is fifo


def test_drain_refuses_a_backend_that_is_not_in_memory(clock: ManualClock) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=cast("Backend", object()), clock=clock)

    with pytest.raises(ConfigurationError, match="memory"):
        jobs.drain()


def test_a_permanent_error_moves_the_message_to_the_dlq_with_why(clock: ManualClock) -> None:
    jobs = _app(clock)

    @jobs.job("charge")
    def charge(payload: Order) -> None:
        raise PermanentError("card declined")

    with jobs.testing() as backend:
        jobs.enqueue("charge", {"order_id": 1})
        report = jobs.drain()

        assert len(backend) == 0
        [record] = _dead_letters(backend)
        traceback = record.pop("traceback")
        assert isinstance(traceback, str)
        assert traceback.endswith("cloudjobs.errors.PermanentError: card declined\n")
        assert 'raise PermanentError("card declined")' in traceback
        assert [record] == [
            {
                "reason": "permanent_error",
                "error": "PermanentError: card declined",
                "attempts": 1,
                "job_type": "charge",
                "failed_at": clock.now().isoformat(),
            }
        ]
    assert report.dead_lettered == 1
    assert report.completed == 0


def test_the_dead_lettered_message_keeps_its_body_and_attributes(clock: ManualClock) -> None:
    jobs = _app(clock)

    @jobs.job("charge")
    def charge(payload: Order) -> None:
        raise PermanentError("no")

    with jobs.testing() as backend:
        jobs.enqueue("charge", {"order_id": 1})
        [original] = backend.messages()
        jobs.drain()

        assert backend.dead_letter_queue is not None
        [copy] = backend.dead_letter_queue.messages()
    assert copy.body == original.body
    assert {**original.attributes, "cloudjobs.dead_letter": copy.attributes["cloudjobs.dead_letter"]} == (
        copy.attributes
    )


def test_a_payload_failing_its_schema_is_dead_lettered_as_invalid_payload(clock: ManualClock) -> None:
    jobs = _app(clock)
    calls: list[Order] = []

    @jobs.job("ship")
    def ship(payload: Order) -> None:
        calls.append(payload)

    with jobs.testing() as backend:
        _send_raw(backend, _envelope_body("ship", {"order_id": "seven"}), {"cloudjobs.type": "ship"})
        jobs.drain()

        [details] = _dead_letters(backend)
    assert details["reason"] == "invalid_payload"
    assert details["job_type"] == "ship"
    assert calls == []


def test_an_undecodable_body_is_dead_lettered_as_unroutable(clock: ManualClock) -> None:
    jobs = _app(clock)

    with jobs.testing() as backend:
        _send_raw(backend, "<xml>not for us</xml>")
        jobs.drain()

        [details] = _dead_letters(backend)
    assert details["reason"] == "unroutable"
    assert details["attempts"] == 1


def test_a_foreign_body_is_run_by_the_default_job_type(clock: ManualClock) -> None:
    jobs = _app(clock, default_job_type="import-order")
    received: list[Order] = []

    @jobs.job("import-order")
    def import_order(payload: Order) -> None:
        received.append(payload)

    with jobs.testing() as backend:
        _send_raw(backend, '{"order_id": 11}')
        report = jobs.drain()
        assert len(backend) == 0

    assert report.completed == 1
    assert received == [Order(order_id=11)]


def test_a_foreign_body_is_run_by_the_job_type_its_attribute_names(clock: ManualClock) -> None:
    jobs = _app(clock, job_type_attribute="JobType")
    received: list[JsonValue] = []

    @jobs.job("audit")
    def audit(payload: JsonValue) -> None:
        received.append(payload)

    with jobs.testing() as backend:
        _send_raw(backend, '["a", "b"]', {"jobtype": "audit"})
        _send_raw(backend, '["c"]')
        report = jobs.drain()

        [details] = _dead_letters(backend)
    assert received == [["a", "b"]]
    assert report.completed == 1
    assert details["reason"] == "unroutable"


def test_a_malformed_envelope_is_dead_lettered_as_malformed(clock: ManualClock) -> None:
    jobs = _app(clock)

    with jobs.testing() as backend:
        _send_raw(backend, '{"cloudjobs": 1, "type": "x", "payload": {}}')
        jobs.drain()

        [details] = _dead_letters(backend)
    assert details["reason"] == "malformed_envelope"


def test_an_unknown_job_type_is_retried_with_backoff_then_dead_lettered_as_unknown_job(
    clock: ManualClock,
) -> None:
    jobs = _app(clock, max_attempts=5, backoff_base_seconds=2)

    with jobs.testing() as backend:
        jobs.enqueue("not-deployed-yet", {})
        report = jobs.drain()

        [details] = _dead_letters(backend)
    retries = [outcome for _, outcome in report.outcomes if isinstance(outcome, Retry)]
    # Ceilings 2, 4, 8, 16 s, each drawn at one half: 1 + half the ceiling.
    assert [retry.delay for retry in retries] == [timedelta(seconds=s) for s in (2, 3, 5, 9)]
    assert [retry.attempt for retry in retries] == [1, 2, 3, 4]
    assert details["reason"] == "unknown_job"
    assert details["attempts"] == 5


def test_a_retryable_error_hides_the_message_for_its_own_delay(clock: ManualClock) -> None:
    jobs = _app(clock, backoff_base_seconds=100)
    attempts: list[int] = []

    @jobs.job("poll")
    def poll(payload: object, job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RetryableError("not yet", delay=7)

    with jobs.testing() as backend:
        jobs.enqueue("poll", {})
        first = jobs.drain(skip_delays=False)
        [message] = backend.messages()
        assert message.visible_at - backend.now() == timedelta(seconds=7)

        backend.advance(6)
        assert jobs.drain(skip_delays=False).outcomes == []
        backend.advance(1)
        second = jobs.drain(skip_delays=False)

    assert first.retried == 1
    assert second.completed == 1
    assert attempts == [1, 2]


def test_drain_skips_over_retry_delays_by_moving_the_queue_time(clock: ManualClock) -> None:
    jobs = _app(clock, backoff_base_seconds=60)
    attempts: list[int] = []

    @jobs.job("flaky")
    def flaky(payload: object, job: Job) -> None:
        attempts.append(job.attempt)
        if job.attempt < 3:
            raise ConnectionError("try later")

    with jobs.testing() as backend:
        jobs.enqueue("flaky", {})
        report = jobs.drain()
        waited = backend.now() - clock.now()

    assert attempts == [1, 2, 3]
    assert report.retried == 2
    assert report.completed == 1
    assert waited == timedelta(seconds=31 + 61)


def test_exhausted_attempts_dead_letter_as_max_attempts(clock: ManualClock) -> None:
    jobs = _app(clock)
    attempts: list[int] = []

    @jobs.job("doomed", max_attempts=3)
    def doomed(payload: object, job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("still broken")

    with jobs.testing() as backend:
        jobs.enqueue("doomed", {})
        report = jobs.drain()

        [details] = _dead_letters(backend)
        assert len(backend) == 0
    assert attempts == [1, 2, 3]
    assert report.retried == 2
    assert details["reason"] == "max_attempts"
    assert details["attempts"] == 3
    assert details["error"] == "RuntimeError: still broken"


def test_a_queue_redriving_before_the_last_attempt_dead_letters_with_max_receives_and_warns(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend(max_receive_count=3, clock=clock)
    jobs = _app(clock, backend, max_attempts=5)
    attempts: list[int] = []

    @jobs.job("fragile")
    def fragile(payload: object, job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("boom")

    jobs.enqueue("fragile", {})
    with caplog.at_level(logging.WARNING, logger="cloudjobs.consumer"):
        jobs.drain()

    warnings = [record for record in caplog.records if record.name == "cloudjobs.consumer"]
    assert len(warnings) == 1
    assert "fragile" in warnings[0].getMessage()
    assert attempts == [1, 2, 3]
    [details] = _dead_letters(backend)
    assert details["reason"] == "max_receives"
    assert details["attempts"] == 3


def test_an_async_handler_runs_under_drain(clock: ManualClock) -> None:
    jobs = _app(clock)

    @jobs.job("fetch")
    async def fetch(payload: Order) -> int:
        await asyncio.sleep(0)
        return payload.order_id + 1

    with jobs.testing():
        jobs.enqueue("fetch", {"order_id": 1})
        report = jobs.drain()

    assert [outcome for _, outcome in report.outcomes] == [Completed(result=2)]


def test_an_async_handler_past_its_timeout_is_retried_then_dead_lettered(clock: ManualClock) -> None:
    jobs = _app(clock)

    @jobs.job("hang", max_attempts=2, timeout=0.01)
    async def hang(payload: object) -> None:
        await asyncio.Event().wait()

    with jobs.testing() as backend:
        jobs.enqueue("hang", {})
        report = jobs.drain()

        [details] = _dead_letters(backend)
    assert report.retried == 1
    assert details["reason"] == "max_attempts"
    assert isinstance(details["error"], str)
    assert details["error"].startswith("JobTimeoutError")


def test_drain_without_skipping_delays_leaves_delayed_jobs(clock: ManualClock) -> None:
    jobs = _app(clock)
    ran: list[int] = []

    @jobs.job("later")
    def later(payload: Order) -> None:
        ran.append(payload.order_id)

    with jobs.testing() as backend:
        jobs.enqueue("later", {"order_id": 1}, delay=60)
        jobs.enqueue("later", {"order_id": 2})
        jobs.drain(skip_delays=False)
        assert ran == [2]
        assert len(backend) == 1

        jobs.drain()
    assert ran == [2, 1]


def test_drain_stops_after_max_jobs(clock: ManualClock) -> None:
    jobs = _app(clock)

    @jobs.job("noop")
    def noop(payload: object) -> None:
        pass

    with jobs.testing() as backend:
        jobs.enqueue_many([("noop", {})] * 15)
        report = jobs.drain(max_jobs=12)
        assert len(backend) == 3

    assert report.completed == 12


def test_a_fifo_group_waits_for_its_failed_message_while_another_group_continues(clock: ManualClock) -> None:
    backend = MemoryBackend("orders.fifo", clock=clock)
    jobs = _app(clock, backend)
    ran: list[str] = []
    failed_once: set[str] = set()

    @jobs.job("step")
    def step(payload: dict[str, str]) -> None:
        name = payload["name"]
        ran.append(name)
        if name == "a1" and name not in failed_once:
            failed_once.add(name)
            raise RetryableError("first try fails", delay=5)

    for group, name in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]:
        jobs.enqueue("step", {"name": name}, group_id=group)
    jobs.drain()

    assert ran.index("a1") < ran.index("a1", ran.index("a1") + 1) < ran.index("a2")
    assert ran.index("b1") < ran.index("b2") < ran.index("a2"), "group b ran on while a1 waited"
    assert len(backend) == 0


def _fifo_delivery(name: str, group: str, *, job_type: str = "step") -> Delivery:
    return Delivery(
        message_id=name,
        receipt=f"{name}#1",
        body=_envelope_body(job_type, {"name": name}, job_id=name),
        attributes={"cloudjobs.type": job_type},
        receive_count=1,
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        queue="orders.fifo",
        group_id=group,
    )


def test_in_one_batch_a_groups_failure_releases_the_rest_of_that_group_unrun(clock: ManualClock) -> None:
    jobs = _app(clock, MemoryBackend("orders.fifo", clock=clock))
    ran: list[str] = []

    @jobs.job("step")
    def step(payload: dict[str, str]) -> None:
        ran.append(payload["name"])
        if payload["name"] == "a1":
            raise RuntimeError("a1 broke")

    batch = [
        _fifo_delivery("a1", "a"),
        _fifo_delivery("b1", "b"),
        _fifo_delivery("a2", "a"),
        _fifo_delivery("b2", "b"),
        _fifo_delivery("a3", "a"),
    ]
    outcomes = {delivery.message_id: outcome for delivery, outcome in run_in_order(jobs.consumer(), batch)}

    assert ran == ["a1", "b1", "b2"]
    assert isinstance(outcomes["a1"], Retry)
    assert outcomes["a2"] == Released(reason="fifo_group_blocked")
    assert outcomes["a3"] == Released(reason="fifo_group_blocked")
    assert outcomes["b1"] == Completed()
    assert outcomes["b2"] == Completed()


def test_in_one_batch_a_dead_lettered_message_does_not_block_its_group(clock: ManualClock) -> None:
    jobs = _app(clock, MemoryBackend("orders.fifo", clock=clock))
    ran: list[str] = []

    @jobs.job("step")
    def step(payload: dict[str, str]) -> None:
        ran.append(payload["name"])
        if payload["name"] == "a1":
            raise PermanentError("a1 can never work")

    batch = [_fifo_delivery("a1", "a"), _fifo_delivery("a2", "a")]
    outcomes = [outcome for _, outcome in run_in_order(jobs.consumer(), batch)]

    assert ran == ["a1", "a2"]
    assert isinstance(outcomes[0], DeadLetter)
    assert outcomes[1] == Completed()
