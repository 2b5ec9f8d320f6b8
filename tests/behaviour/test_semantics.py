"""The semantics of cloudjobs, stated once and run on every backend (memory, and SQS over HTTP)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import BatchEnqueueError, CloudJobs, Job, PermanentError, RetryableError
from cloudjobs.backends.base import Backend, Delivery, OutgoingMessage, QueueInfo, SendResult
from tests.behaviour.conftest import Harness, running, wait_for


class Email(BaseModel):
    to: str


def _raw_envelope(job_type: str, payload: object) -> str:
    return json.dumps(
        {
            "cloudjobs": 1,
            "id": "raw-1",
            "type": job_type,
            "payload": payload,
            "correlation_id": "c-1",
            "enqueued_at": "2026-01-01T00:00:00Z",
        }
    )


def test_an_enqueued_job_is_handled_once_and_deleted(harness: Harness) -> None:
    jobs = harness.app()
    handled: list[tuple[str, str, int]] = []

    @jobs.job("send-email")
    def send_email(payload: Email, job: Job) -> None:
        handled.append((payload.to, job.id, job.attempt))

    job_id = send_email.enqueue(Email(to="a@example.com"))
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["completed"] == 1)
    assert handled == [("a@example.com", job_id, 1)]
    wait_for(lambda: harness.is_empty(jobs), message="the message to be deleted")


def test_a_delayed_job_is_not_handled_before_its_delay(harness: Harness) -> None:
    jobs = harness.app()
    handled_at: list[float] = []

    @jobs.job("later")
    def later(payload: dict[str, int]) -> None:
        handled_at.append(time.monotonic())

    with running(jobs) as worker:
        enqueued_at = time.monotonic()
        later.enqueue({}, delay=2)
        wait_for(lambda: worker.counts["completed"] == 1)
    assert handled_at[0] - enqueued_at >= 1.9


def test_a_failed_attempt_is_retried_after_its_backoff_and_then_succeeds(harness: Harness) -> None:
    # random() = 0.75 and base 2 s: the first backoff is int(2 × 0.75) = 1 s, and never more.
    jobs = harness.app(random=lambda: 0.75, backoff_base_seconds=2, backoff_cap_seconds=4)
    attempts: list[tuple[int, float]] = []

    @jobs.job("flaky", max_attempts=3)
    def flaky(payload: dict[str, int], job: Job) -> str:
        attempts.append((job.attempt, time.monotonic()))
        if job.attempt == 1:
            raise ConnectionError("upstream reset")
        return "ok"

    flaky.enqueue({})
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["completed"] == 1)
    assert [attempt for attempt, _ in attempts] == [1, 2]
    assert attempts[1][1] - attempts[0][1] >= 0.9
    assert worker.counts["retried"] == 1


def test_a_permanent_error_lands_in_the_dlq_with_its_reason_and_is_not_retried(harness: Harness) -> None:
    jobs = harness.app()
    calls: list[int] = []

    @jobs.job("charge")
    def charge(payload: dict[str, int], job: Job) -> None:
        calls.append(job.attempt)
        raise PermanentError("card declined")

    charge.enqueue({"amount": 5})
    with running(jobs) as worker:
        [dead] = harness.dead_letters(jobs, expected=1)
        wait_for(lambda: worker.counts["dead_lettered"] == 1)
    assert calls == [1]
    assert dead["reason"] == "permanent_error"
    assert dead["error"] == "PermanentError: card declined"
    assert dead["attempts"] == 1
    assert dead["job_type"] == "charge"
    assert json.loads(dead["body"])["payload"] == {"amount": 5}
    wait_for(lambda: harness.is_empty(jobs), message="the source message to be deleted")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_raw_envelope("send-email", {"to": 42}), "invalid_payload"),
        ("{not json", "unroutable"),
        ('{"cloudjobs": 1, "id": "x"}', "malformed_envelope"),
        ('{"cloudjobs": 99, "id": "x"}', "unsupported_version"),
    ],
    ids=["schema-failure", "undecodable", "malformed-envelope", "newer-version"],
)
def test_a_message_that_cannot_run_lands_in_the_dlq_with_its_reason(
    harness: Harness, body: str, reason: str
) -> None:
    jobs = harness.app()
    calls: list[object] = []

    @jobs.job("send-email")
    def send_email(payload: Email) -> None:
        calls.append(payload)

    jobs.backend.send([OutgoingMessage(body=body)])
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)
    assert dead["reason"] == reason
    assert dead["body"] == body
    assert calls == []
    wait_for(lambda: harness.is_empty(jobs), message="the source message to be deleted")


def test_a_dead_lettered_copy_keeps_its_traceparent_when_the_attributes_are_full(harness: Harness) -> None:
    jobs = harness.app(default_job_type="refund")
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    @jobs.job("refund")
    def refund(payload: dict[str, int]) -> None:
        raise PermanentError("no such order")

    # A foreign sender's ten attributes, its trace context last: the copy's reason makes eleven.
    own = {f"sender-field-{index}": str(index) for index in range(7)}
    attributes = {**own, "baggage": "tenant=acme", "tracestate": "vendor=1", "traceparent": traceparent}
    jobs.backend.send([OutgoingMessage(body="{}", attributes=attributes)])
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)

    assert dead["reason"] == "permanent_error"
    copied = dead["attributes"]
    assert copied["traceparent"] == traceparent
    assert "cloudjobs.dead_letter" in copied
    assert len(copied) == 10
    # The lowest-ranked field goes first: the baggage.
    assert "baggage" not in copied
    assert copied["tracestate"] == "vendor=1"


def test_an_unknown_job_type_is_retried_then_dead_lettered_as_unknown_job(harness: Harness) -> None:
    jobs = harness.app(max_attempts=3, random=lambda: 0.0)
    jobs.enqueue("not-deployed-yet", {"n": 1})
    with running(jobs) as worker:
        [dead] = harness.dead_letters(jobs, expected=1)
        wait_for(lambda: worker.counts["retried"] == 2)
    assert dead["reason"] == "unknown_job"
    assert dead["attempts"] == 3
    assert dead["job_type"] == "not-deployed-yet"


def test_a_job_that_fails_every_attempt_lands_in_the_dlq_as_max_attempts(harness: Harness) -> None:
    jobs = harness.app(random=lambda: 0.0)
    attempts: list[int] = []

    @jobs.job("doomed", max_attempts=2)
    def doomed(payload: dict[str, int], job: Job) -> None:
        attempts.append(job.attempt)
        raise RetryableError("still down")

    doomed.enqueue({})
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)
    assert attempts == [1, 2]
    assert (dead["reason"], dead["attempts"]) == ("max_attempts", 2)
    assert dead["error"] == "RetryableError: still down"


def test_a_plain_json_body_is_routed_by_the_default_type_rule(harness: Harness) -> None:
    jobs = harness.app(default_job_type="audit")
    seen: list[tuple[object, str]] = []

    @jobs.job("audit")
    def audit(payload: dict[str, str], job: Job) -> None:
        seen.append((payload, job.id))

    [sent] = jobs.backend.send([OutgoingMessage(body='{"event": "signup"}')])
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["completed"] == 1)
    assert seen == [({"event": "signup"}, sent.message_id)]


def test_a_plain_json_body_without_a_routing_rule_lands_in_the_dlq(harness: Harness) -> None:
    jobs = harness.app()
    jobs.backend.send([OutgoingMessage(body='{"event": "signup"}')])
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)
    assert dead["reason"] == "unroutable"


def test_a_handler_running_three_times_the_visibility_timeout_completes_once(harness: Harness) -> None:
    jobs = harness.app(visibility_timeout_seconds=2)
    runs: list[int] = []

    @jobs.job("long", timeout=30)
    def long(payload: dict[str, int], job: Job) -> None:
        runs.append(job.attempt)
        time.sleep(6)  # the work itself: three visibility timeouts long

    long.enqueue({})
    with running(jobs, concurrency=2) as worker:
        wait_for(lambda: worker.counts["completed"] == 1)
    assert runs == [1]
    assert worker.counts["retried"] == 0
    wait_for(lambda: harness.is_empty(jobs), message="the message to be deleted")


def test_a_sync_handler_past_its_timeout_is_retried_and_concurrency_is_never_exceeded(
    harness: Harness,
) -> None:
    jobs = harness.app(random=lambda: 0.0)
    lock = threading.Lock()
    running_now = peak = 0
    release = threading.Event()
    attempts: list[int] = []

    def enter() -> None:
        nonlocal running_now, peak
        with lock:
            running_now += 1
            peak = max(peak, running_now)

    def leave() -> None:
        nonlocal running_now
        with lock:
            running_now -= 1

    @jobs.job("stuck", timeout=1)
    def stuck(payload: dict[str, int], job: Job) -> None:
        enter()
        try:
            attempts.append(job.attempt)
            if job.attempt == 1:
                release.wait(10)  # hangs past its timeout until the test lets it go
        finally:
            leave()

    @jobs.job("quick")
    def quick(payload: dict[str, int]) -> None:
        enter()
        try:
            time.sleep(0.05)
        finally:
            leave()

    stuck.enqueue({})
    quick.enqueue_many([{"n": n} for n in range(8)])
    with _deadline_watch() as deadline_passed, running(jobs, concurrency=2) as worker:
        wait_for(lambda: worker.counts["completed"] >= 8, message="the quick jobs, on the other slot")
        wait_for(deadline_passed.is_set, message="the stuck attempt's deadline")
        # Past its timeout, the stuck attempt is not retried while its thread runs: attempts of one
        # job never overlap.
        assert worker.counts["retried"] == 0
        assert attempts == [1]
        release.set()
        wait_for(lambda: worker.counts["completed"] == 9, message="the retry to succeed")
    assert worker.counts["retried"] == 1
    assert attempts == [1, 2]
    assert peak <= 2


class _DeadlineHandler(logging.Handler):
    def __init__(self, passed: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.passed = passed

    def emit(self, record: logging.LogRecord) -> None:
        if "passed its timeout" in record.getMessage():
            self.passed.set()


@contextlib.contextmanager
def _deadline_watch() -> Iterator[threading.Event]:
    """An event set when the consumer logs that a job passed its timeout."""
    passed = threading.Event()
    handler = _DeadlineHandler(passed)
    consumer_logger = logging.getLogger("cloudjobs.consumer")
    consumer_logger.addHandler(handler)
    try:
        yield passed
    finally:
        consumer_logger.removeHandler(handler)


class _FailingEntry:
    """A backend that gives one entry of each send a delay the queue refuses (901 s)."""

    def __init__(self, inner: Backend, index: int) -> None:
        self._inner = inner
        self._index = index

    def info(self) -> QueueInfo:
        return self._inner.info()

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        altered = [
            OutgoingMessage(
                body=m.body,
                attributes=m.attributes,
                delay=timedelta(seconds=901) if i == self._index else m.delay,
                group_id=m.group_id,
                deduplication_id=m.deduplication_id,
            )
            for i, m in enumerate(messages)
        ]
        return self._inner.send(altered)

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


def test_a_batch_enqueue_reports_its_failing_entry_and_sends_the_others(harness: Harness) -> None:
    real = harness.app()
    jobs = CloudJobs(settings=real.settings, backend=_FailingEntry(real.backend, index=3))
    handled: list[int] = []

    @real.job("count")
    def count(payload: dict[str, int]) -> None:
        handled.append(payload["n"])

    with pytest.raises(BatchEnqueueError) as raised:
        jobs.enqueue_many([("count", {"n": n}) for n in range(12)])

    assert list(raised.value.failures) == [3]
    assert raised.value.sent[3] is None
    assert all(job_id is not None for i, job_id in enumerate(raised.value.sent) if i != 3)
    with running(real) as worker:
        wait_for(lambda: worker.counts["completed"] == 11)
    assert sorted(handled) == [n for n in range(12) if n != 3]


def test_fifo_messages_of_one_group_run_in_order(harness: Harness) -> None:
    jobs = harness.app(fifo=True)
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    @jobs.job("step")
    def step(payload: dict[str, int | str]) -> None:
        time.sleep(0.01)
        with lock:
            seen.append((str(payload["group"]), int(payload["n"])))

    for group in ("a", "b"):
        for n in range(6):
            jobs.enqueue("step", {"group": group, "n": n}, group_id=group)
    with running(jobs, concurrency=4) as worker:
        wait_for(lambda: worker.counts["completed"] == 12)
    for group in ("a", "b"):
        assert [n for g, n in seen if g == group] == list(range(6))
