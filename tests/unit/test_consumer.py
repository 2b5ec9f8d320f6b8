"""The consumer core: one delivery in, one outcome out (``jobs.consumer().process(delivery)``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError

from cloudjobs import (
    CloudJobs,
    Completed,
    DeadLetter,
    Delivery,
    Job,
    ManualClock,
    MemoryBackend,
    Outcome,
    PayloadValidationError,
    PermanentError,
    Retry,
    RetryableError,
    RetryPolicy,
    Settings,
    current_job,
)
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.consumer import Prepared
from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import Envelope, encode


class Order(BaseModel):
    order_id: int
    note: str = ""


def _app(backend: MemoryBackend, clock: ManualClock, **settings: object) -> CloudJobs:
    return CloudJobs(
        settings=Settings(_env_file=None, **settings),  # type: ignore[arg-type]
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
    )


def _deliver(backend: MemoryBackend) -> Delivery:
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    return delivery


def _send_raw(backend: MemoryBackend, body: str, attributes: dict[str, str] | None = None) -> None:
    [result] = backend.send([OutgoingMessage(body=body, attributes=attributes or {})])
    assert result.is_sent, result.error


def _envelope_body(job_type: str, payload: object, **changes: object) -> str:
    fields: dict[str, object] = {
        "id": "job-1",
        "type": job_type,
        "payload": payload,
        "correlation_id": "corr-1",
        "enqueued_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return encode(Envelope(**fields))  # type: ignore[arg-type]


def _process(jobs: CloudJobs, backend: MemoryBackend, *, receive_count: int | None = None) -> Outcome:
    delivery = _deliver(backend)
    if receive_count is not None:
        delivery = dataclasses.replace(delivery, receive_count=receive_count)
    return jobs.consumer().process(delivery)


def test_a_handler_that_returns_completes_with_its_result(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("total")
    def total(payload: Order) -> int:
        return payload.order_id * 2

    jobs.enqueue("total", Order(order_id=21))

    assert _process(jobs, backend) == Completed(result=42)


def test_a_handler_taking_only_the_payload_receives_the_validated_model(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    received: list[Order] = []

    @jobs.job("take")
    def take(payload: Order) -> None:
        received.append(payload)

    jobs.enqueue("take", {"order_id": 7})
    _process(jobs, backend)

    assert received == [Order(order_id=7)]


class BuiltLater(BaseModel):
    """A payload model whose validator is built on its first use."""

    model_config = ConfigDict(defer_build=True)

    count: int


@pytest.mark.parametrize(
    ("annotation", "payload"),
    [
        (Order, {"order_id": 7}),
        (Order, {"order_id": "7"}),
        (Order, {"note": "no id"}),
        (BuiltLater, {"count": 1}),
        (BuiltLater, {"count": "x"}),
        (list[int], [1, "2"]),
        (object, {"any": ["thing"]}),
        (Any, [{"any": "thing"}]),
        (int, "three"),
    ],
)
def test_a_payload_is_validated_as_the_annotations_type_adapter_validates_it(
    annotation: Any, payload: JsonValue
) -> None:
    definition = JobDefinition(
        name="typed",
        function=print,
        payload_type=annotation,
        takes_job=False,
        is_async=False,
        max_attempts=None,
        timeout=None,
        retry=None,
    )
    try:
        expected: object = TypeAdapter(annotation).validate_python(payload)
    except ValidationError:
        with pytest.raises(PayloadValidationError):
            definition.validate(payload)
        return
    for _ in range(2):  # the first call builds the validator, the second reuses it
        assert definition.validate(payload) == expected


def test_a_handler_taking_the_job_sees_every_field_right(
    jobs: CloudJobs, backend: MemoryBackend, clock: ManualClock
) -> None:
    seen: list[Job] = []

    @jobs.job("inspect", max_attempts=4, timeout=12)
    def inspect_job(payload: Order, job: Job) -> None:
        seen.append(job)

    enqueued_at = clock.now()
    job_id = jobs.enqueue("inspect", {"order_id": 1}, idempotency_key="order-1")
    clock.advance(30)
    delivery = _deliver(backend)
    jobs.consumer().process(delivery)

    [job] = seen
    assert job.id == job_id
    assert job.type == "inspect"
    assert job.attempt == 1
    assert job.max_attempts == 4
    assert job.enqueued_at == enqueued_at
    assert job.correlation_id == job.envelope.correlation_id
    assert job.queue == "jobs"
    assert job.timeout == timedelta(seconds=12)
    assert job.idempotency_key == "order-1"
    assert job.message == delivery
    assert job.is_last_attempt is False


def test_the_attempt_is_the_receive_count_less_the_envelopes_offset(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    attempts: list[int] = []

    @jobs.job("count")
    def count(payload: object, job: Job) -> None:
        attempts.append(job.attempt)

    _send_raw(backend, _envelope_body("count", {}, attempt_offset=2))
    _process(jobs, backend, receive_count=4)

    assert attempts == [2]


def test_the_running_job_is_current_only_inside_the_handler(jobs: CloudJobs, backend: MemoryBackend) -> None:
    inside: list[Job | None] = []

    @jobs.job("current")
    def current(payload: object, job: Job) -> None:
        inside.append(current_job())
        assert current_job() is job

    jobs.enqueue("current", {})
    _process(jobs, backend)

    assert inside[0] is not None
    assert current_job() is None


def test_a_permanent_error_dead_letters_at_once(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("charge")
    def charge(payload: object) -> None:
        raise PermanentError("card declined")

    jobs.enqueue("charge", {})

    assert _process(jobs, backend) == DeadLetter(
        reason="permanent_error", error="PermanentError: card declined", attempt=1, job_type="charge"
    )


def test_a_message_error_raised_by_the_handler_dead_letters_with_its_reason(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("check")
    def check(payload: object) -> None:
        raise PayloadValidationError("field x is gone", job_name="check")

    jobs.enqueue("check", {})
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "invalid_payload"


def test_a_payload_failing_its_schema_dead_letters_without_running_the_handler(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    calls: list[object] = []

    @jobs.job("ship")
    def ship(payload: Order) -> None:
        calls.append(payload)

    _send_raw(backend, _envelope_body("ship", {"order_id": "not a number"}))
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "invalid_payload"
    assert "order_id" in outcome.error
    assert calls == []


def test_an_undecodable_body_without_a_routing_rule_is_unroutable(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    _send_raw(backend, "hello from another system")
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "unroutable"
    assert "CLOUDJOBS_DEFAULT_JOB_TYPE" in outcome.error


def test_a_foreign_json_body_is_routed_to_the_default_job_type_with_its_parsed_payload(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, default_job_type="import-order")
    received: list[tuple[Order, Job]] = []

    @jobs.job("import-order")
    def import_order(payload: Order, job: Job) -> None:
        received.append((payload, job))

    _send_raw(backend, '{"order_id": 5, "note": "from the shop"}')
    delivery = _deliver(backend)
    outcome = jobs.consumer().process(delivery)

    assert outcome == Completed()
    [(payload, job)] = received
    assert payload == Order(order_id=5, note="from the shop")
    assert job.id == delivery.message_id
    assert job.enqueued_at == delivery.sent_at


def test_a_foreign_text_body_is_routed_with_the_text_as_its_payload(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, default_job_type="log-line")
    received: list[object] = []

    @jobs.job("log-line")
    def log_line(payload: str) -> None:
        received.append(payload)

    _send_raw(backend, "GET /index.html 200")
    _process(jobs, backend)

    assert received == ["GET /index.html 200"]


def test_the_job_type_attribute_routes_foreign_messages_matching_its_name_case_insensitively(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, job_type_attribute="job-type", default_job_type="fallback")
    ran: list[str] = []

    @jobs.job("refund")
    def refund(payload: object) -> None:
        ran.append("refund")

    @jobs.job("fallback")
    def fallback(payload: object) -> None:
        ran.append("fallback")

    _send_raw(backend, '{"order_id": 1}', {"Job-Type": "refund"})
    _send_raw(backend, '{"order_id": 2}', {"other": "x"})
    consumer = jobs.consumer()
    for delivery in backend.receive(max_messages=2, wait=timedelta(0)):
        consumer.process(delivery)

    assert ran == ["refund", "fallback"]


def test_a_foreign_message_keeps_the_correlation_id_from_its_attribute(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, default_job_type="plain")
    seen: list[str] = []

    @jobs.job("plain")
    def plain(payload: object, job: Job) -> None:
        seen.append(job.correlation_id)

    _send_raw(backend, "{}", {"CloudJobs.Correlation_Id": "request-9"})
    _process(jobs, backend)

    assert seen == ["request-9"]


def test_a_malformed_envelope_dead_letters_as_malformed(jobs: CloudJobs, backend: MemoryBackend) -> None:
    _send_raw(backend, '{"cloudjobs": 1, "id": "x"}')
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "malformed_envelope"


def test_a_malformed_envelope_is_not_routed_as_foreign(backend: MemoryBackend, clock: ManualClock) -> None:
    jobs = _app(backend, clock, default_job_type="anything")

    @jobs.job("anything")
    def anything(payload: object) -> None:
        pass

    _send_raw(backend, '{"cloudjobs": 1, "id": "x"}')
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "malformed_envelope"


def test_an_envelope_of_a_newer_version_dead_letters_as_unsupported(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    _send_raw(backend, '{"cloudjobs": 2, "id": "x", "type": "t"}')
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "unsupported_version"


def test_an_unknown_job_type_is_retried_with_backoff(backend: MemoryBackend, clock: ManualClock) -> None:
    jobs = _app(backend, clock, backoff_base_seconds=10)
    jobs.enqueue("deployed-later", {})

    outcome = _process(jobs, backend)

    assert isinstance(outcome, Retry)
    assert outcome.delay == timedelta(seconds=6)  # 1 + half of the first ceiling, 10 s
    assert "deployed-later" in outcome.error


def test_an_unknown_job_type_dead_letters_as_unknown_job_after_the_last_attempt(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, max_attempts=3)
    jobs.enqueue("never-deployed", {})

    outcome = _process(jobs, backend, receive_count=3)

    assert outcome == DeadLetter(
        reason="unknown_job",
        error="UnknownJobError: no handler registered for job type 'never-deployed'",
        attempt=3,
        job_type="never-deployed",
    )


def test_a_retryable_error_with_a_delay_retries_after_that_delay(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("poll")
    def poll(payload: object) -> None:
        raise RetryableError("not ready", delay=7)

    jobs.enqueue("poll", {})

    assert _process(jobs, backend) == Retry(
        delay=timedelta(seconds=7), error="RetryableError: not ready", attempt=1
    )


def test_any_other_exception_retries_after_the_jittered_backoff(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, backoff_base_seconds=4)

    @jobs.job("flaky")
    def flaky(payload: object) -> None:
        raise ConnectionError("reset by peer")

    jobs.enqueue("flaky", {})

    # Third attempt: ceiling 4 s * 2**2 = 16 s, drawn at one half: 1 + 8 s.
    assert _process(jobs, backend, receive_count=3) == Retry(
        delay=timedelta(seconds=9), error="ConnectionError: reset by peer", attempt=3
    )


def test_the_last_failed_attempt_dead_letters_as_max_attempts(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    seen: list[bool] = []

    @jobs.job("doomed", max_attempts=2)
    def doomed(payload: object, job: Job) -> None:
        seen.append(job.is_last_attempt)
        raise RetryableError("again", delay=1)

    jobs.enqueue("doomed", {})

    assert _process(jobs, backend, receive_count=2) == DeadLetter(
        reason="max_attempts", error="RetryableError: again", attempt=2, job_type="doomed"
    )
    assert seen == [True]


def test_a_jobs_own_retry_policy_replaces_the_settings(jobs: CloudJobs, backend: MemoryBackend) -> None:
    policy = RetryPolicy(
        max_attempts=2, base=timedelta(seconds=100), cap=timedelta(seconds=100), random=lambda: 0.25
    )

    @jobs.job("custom", retry=policy)
    def custom(payload: object) -> None:
        raise ValueError("nope")

    jobs.enqueue("custom", {})
    outcome = _process(jobs, backend)

    assert outcome == Retry(delay=timedelta(seconds=26), error="ValueError: nope", attempt=1)


def test_a_queue_redriving_before_the_last_attempt_is_warned_about_when_the_consumer_is_made(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend(max_receive_count=3, clock=clock)
    jobs = _app(backend, clock, max_attempts=5)

    @jobs.job("fragile")
    def fragile(payload: object) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="cloudjobs.consumer"):
        jobs.consumer()

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "fragile" in record.getMessage()
    assert "max_receives" in record.getMessage()


def test_no_warning_when_the_queue_allows_every_attempt(
    backend: MemoryBackend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = _app(backend, clock, max_attempts=5)

    @jobs.job("fine")
    def fine(payload: object) -> None:
        pass

    with caplog.at_level(logging.WARNING, logger="cloudjobs.consumer"):
        jobs.consumer()

    assert caplog.records == []


def test_the_last_receive_before_the_queue_would_redrive_dead_letters_as_max_receives(
    clock: ManualClock,
) -> None:
    backend = MemoryBackend(max_receive_count=3, clock=clock)
    jobs = _app(backend, clock, max_attempts=5)

    @jobs.job("fragile")
    def fragile(payload: object) -> None:
        raise RuntimeError("boom")

    jobs.enqueue("fragile", {})
    outcome = _process(jobs, backend, receive_count=3)

    assert outcome == DeadLetter(
        reason="max_receives", error="RuntimeError: boom", attempt=3, job_type="fragile"
    )


def test_an_async_handler_runs_to_its_result(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("fetch")
    async def fetch(payload: Order, job: Job) -> str:
        await asyncio.sleep(0)
        return f"{payload.order_id}@{job.attempt}"

    jobs.enqueue("fetch", {"order_id": 3})

    assert _process(jobs, backend) == Completed(result="3@1")


def test_an_async_handler_is_cancelled_at_its_timeout_and_retried(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    cancelled: list[bool] = []

    @jobs.job("hang", timeout=timedelta(milliseconds=20))
    async def hang(payload: object) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    jobs.enqueue("hang", {})
    outcome = _process(jobs, backend)

    assert isinstance(outcome, Retry)
    assert outcome.error.startswith("JobTimeoutError:")
    assert "hang" in outcome.error
    assert cancelled == [True]


def test_an_async_handler_raising_a_permanent_error_dead_letters(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("refuse")
    async def refuse(payload: object) -> None:
        raise PermanentError("never")

    jobs.enqueue("refuse", {})
    outcome = _process(jobs, backend)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "permanent_error"


class _SkipAll:
    def before_run(self, prepared: Prepared) -> Outcome | None:
        return Completed(result="stored")

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        return outcome


class _SwallowErrors:
    def before_run(self, prepared: Prepared) -> Outcome | None:
        return None

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        return Completed(result=f"swallowed {type(outcome).__name__}")


def test_middleware_may_decide_the_outcome_without_running_the_handler(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    calls: list[object] = []

    @jobs.job("cached")
    def cached(payload: object) -> None:
        calls.append(payload)

    jobs.add_middleware(_SkipAll())
    jobs.enqueue("cached", {})

    assert _process(jobs, backend) == Completed(result="stored")
    assert calls == []


def test_middleware_sees_and_may_replace_the_handlers_outcome(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("fails")
    def fails(payload: object) -> None:
        raise PermanentError("x")

    jobs.add_middleware(_SwallowErrors())
    jobs.enqueue("fails", {})

    assert _process(jobs, backend) == Completed(result="swallowed DeadLetter")


def test_a_retryable_error_with_a_zero_delay_retries_at_once(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    jobs = _app(backend, clock, backoff_base_seconds=100)

    @jobs.job("now")
    def now(payload: object) -> None:
        raise RetryableError("try again now", delay=0)

    jobs.enqueue("now", {})
    outcome = _process(jobs, backend)

    assert isinstance(outcome, Retry)
    assert outcome.delay == timedelta(0)


def test_a_retryable_error_delay_is_capped_at_twelve_hours(jobs: CloudJobs, backend: MemoryBackend) -> None:
    @jobs.job("later")
    def later(payload: object) -> None:
        raise RetryableError("much later", delay=timedelta(hours=13))

    jobs.enqueue("later", {})
    outcome = _process(jobs, backend)

    assert isinstance(outcome, Retry)
    assert outcome.delay == timedelta(hours=12)
