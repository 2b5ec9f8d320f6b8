"""One Lambda handler serving records of several queues: each record's queue from its eventSourceARN."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import (
    BackendError,
    CloudJobs,
    Delivery,
    Job,
    ManualClock,
    MemoryBackend,
    PermanentError,
    RetryableError,
    Settings,
)
from cloudjobs.backends.base import QueueInfo
from cloudjobs.runtimes.aws_lambda import LambdaHandler
from cloudjobs.runtimes.lambda_events import SqsEvent
from tests.unit.test_aws_lambda import FakeContext, hidden_for, receive_all, record_of, reported


class Step(BaseModel):
    name: str
    fails: str | None = None  # "retry" or "permanent"


def letters_of(backend: MemoryBackend) -> dict[str, str]:
    """The DLQ's messages: step name → dead-letter reason."""
    assert backend.dead_letter_queue is not None
    return {
        json.loads(message.body)["payload"]["name"]: json.loads(message.attributes["cloudjobs.dead_letter"])[
            "reason"
        ]
        for message in backend.dead_letter_queue.messages()
    }


@pytest.fixture
def queues(clock: ManualClock) -> dict[str, MemoryBackend]:
    """Three queues on one time: a standard default queue, a standard queue that redrives after a
    single receive, and a FIFO queue."""
    default = MemoryBackend("app-jobs", clock=clock)
    return {
        "default": default,
        "critical": default.sibling("app-critical", max_receive_count=1),
        "orders": default.sibling("app-orders.fifo"),
    }


@pytest.fixture
def ran() -> list[tuple[str, str]]:
    """The steps run: (name, the queue the job came from)."""
    return []


@pytest.fixture
def jobs(clock: ManualClock, queues: dict[str, MemoryBackend], ran: list[tuple[str, str]]) -> CloudJobs:
    app = CloudJobs(
        settings=Settings(_env_file=None),
        backend=queues["default"],
        queues={"critical": queues["critical"], "orders": queues["orders"]},
        clock=clock,
        random=lambda: 0.5,
    )

    @app.job("step")
    def step(payload: Step, job: Job) -> None:
        ran.append((payload.name, job.queue))
        if payload.fails == "retry":
            raise RetryableError(f"{payload.name} not yet", delay=timedelta(seconds=42))
        if payload.fails == "permanent":
            raise PermanentError(f"{payload.name} never")

    return app


@pytest.fixture
def handler(jobs: CloudJobs) -> Iterator[LambdaHandler]:
    built = jobs.lambda_handler()  # records from any queue of the app
    yield built
    built.close()


def event_from(*groups: tuple[list[Delivery], str | None]) -> SqsEvent:
    """An event of these deliveries, each group's records naming the given queue (None: its own)."""
    return {
        "Records": [
            record_of(delivery, queue=queue) for deliveries, queue in groups for delivery in deliveries
        ]
    }


def test_one_handler_runs_each_queues_records_on_that_queue_with_its_own_dlq_and_redrive_threshold(
    jobs: CloudJobs, handler: LambdaHandler, queues: dict[str, MemoryBackend], ran: list[tuple[str, str]]
) -> None:
    jobs.enqueue_many(
        [
            ("step", Step(name="ok-default")),
            ("step", Step(name="retry-default", fails="retry")),
            ("step", Step(name="poison-default", fails="permanent")),
        ]
    )
    jobs.enqueue_many(
        [("step", Step(name="ok-critical")), ("step", Step(name="retry-critical", fails="retry"))],
        queue="critical",
    )
    for name, fails in [("a1", "retry"), ("a2", None)]:
        jobs.enqueue("step", Step(name=name, fails=fails), queue="orders", group_id="a")
    jobs.enqueue("step", Step(name="b1"), queue="orders", group_id="b")
    received = {name: receive_all(backend) for name, backend in queues.items()}
    by_name = {
        json.loads(delivery.body)["payload"]["name"]: delivery.message_id
        for deliveries in received.values()
        for delivery in deliveries
    }

    responses = {name: handler(event_from((received[name], None)), FakeContext()) for name in queues}

    # Standard default queue (redrive after 5): the retry is reported and hidden for its backoff there.
    assert reported(responses["default"]) == [by_name["retry-default"]]
    assert hidden_for(queues["default"], by_name["retry-default"]) == timedelta(seconds=42)
    assert letters_of(queues["default"]) == {"poison-default": "permanent_error"}
    # Redrive after one receive: the same failure cannot be retried there, so it goes to that DLQ.
    assert reported(responses["critical"]) == []
    assert letters_of(queues["critical"]) == {"retry-critical": "max_receives"}
    # FIFO: the failed record holds back the rest of its group, on the FIFO queue only.
    assert reported(responses["orders"]) == [by_name["a1"], by_name["a2"]]
    assert hidden_for(queues["orders"], by_name["a1"]) == timedelta(seconds=42)
    assert hidden_for(queues["orders"], by_name["a2"]) == timedelta(0)
    assert letters_of(queues["orders"]) == {}
    assert sorted(ran) == sorted(
        [
            ("ok-default", "app-jobs"),
            ("retry-default", "app-jobs"),
            ("poison-default", "app-jobs"),
            ("ok-critical", "app-critical"),
            ("retry-critical", "app-critical"),
            ("a1", "app-orders.fifo"),
            ("b1", "app-orders.fifo"),
        ]
    )


def test_a_batch_mixing_queues_reports_failures_in_the_events_order_and_an_unknown_queues_records(
    jobs: CloudJobs,
    handler: LambdaHandler,
    queues: dict[str, MemoryBackend],
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    ran: list[tuple[str, str]],
) -> None:
    jobs.enqueue_many(
        [("step", Step(name="retry-default", fails="retry")), ("step", Step(name="ok-default"))]
    )
    jobs.enqueue("step", Step(name="ok-critical"), queue="critical")
    stranger = MemoryBackend("someone-elses-queue", clock=clock)
    CloudJobs(settings=Settings(_env_file=None), backend=stranger, clock=clock).enqueue_many(
        [("step", Step(name="stranger-1")), ("step", Step(name="stranger-2"))]
    )
    retry_default, ok_default = receive_all(queues["default"])
    [ok_critical] = receive_all(queues["critical"])
    stranger_1, stranger_2 = receive_all(stranger)
    event: SqsEvent = {
        "Records": [record_of(d) for d in (stranger_1, ok_critical, retry_default, stranger_2, ok_default)]
    }

    with caplog.at_level(logging.ERROR, logger="cloudjobs.lambda"):
        response = handler(event, FakeContext())

    assert reported(response) == [stranger_1.message_id, retry_default.message_id, stranger_2.message_id]
    assert sorted(name for name, _ in ran) == ["ok-critical", "ok-default", "retry-default"]
    assert hidden_for(queues["default"], retry_default.message_id) == timedelta(seconds=42)
    [error] = [r.getMessage() for r in caplog.records if r.name == "cloudjobs.lambda"]
    assert "'someone-elses-queue'" in error
    assert "2 record(s)" in error


def test_a_record_whose_arn_names_no_sqs_queue_is_reported(
    jobs: CloudJobs, handler: LambdaHandler, queues: dict[str, MemoryBackend], ran: list[tuple[str, str]]
) -> None:
    jobs.enqueue("step", Step(name="ok"))
    [delivery] = receive_all(queues["default"])
    record = record_of(delivery)
    record["eventSourceARN"] = "arn:aws:s3:::my-bucket"

    response = handler({"Records": [record]}, FakeContext())

    assert reported(response) == [delivery.message_id]
    assert ran == []


class FlakyInfoBackend(MemoryBackend):
    """A memory queue whose configuration cannot be read the next ``failures`` times."""

    def __init__(self, name: str, *, clock: ManualClock) -> None:
        super().__init__(name, clock=clock)
        self.failures = 0

    def info(self) -> QueueInfo:
        if self.failures:
            self.failures -= 1
            raise BackendError("throttled", queue=self.name, code="RequestThrottled")
        return super().info()


def test_a_queue_that_could_not_be_described_is_tried_again_on_the_next_invocation(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FlakyInfoBackend("jobs", clock=clock)
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)
    done: list[str] = []
    jobs.job("step")(lambda payload: done.append(payload["name"]))
    jobs.enqueue("step", {"name": "first"})
    deliveries = receive_all(backend)
    backend.failures = 1
    handler = jobs.lambda_handler()
    try:
        with caplog.at_level(logging.ERROR, logger="cloudjobs.lambda"):
            first = handler(event_from((deliveries, None)), FakeContext())
        second = handler(event_from((deliveries, None)), FakeContext())
    finally:
        handler.close()

    assert reported(first) == [deliveries[0].message_id]
    assert "throttled" in caplog.text
    assert reported(second) == []
    assert done == ["first"]


def test_an_app_on_memory_queues_builds_no_sqs_backend_for_an_unknown_queue(
    jobs: CloudJobs, handler: LambdaHandler, queues: dict[str, MemoryBackend]
) -> None:
    jobs.enqueue("step", Step(name="ok"))
    [delivery] = receive_all(queues["default"])

    response = handler(event_from(([delivery], "app-jobs-but-not-quite")), FakeContext())

    assert reported(response) == [delivery.message_id]
    # No AWS client was reached for: the record stays in flight on its queue, untouched.
    assert hidden_for(queues["default"], delivery.message_id) == queues["default"].visibility_timeout


def test_a_handler_built_once_follows_the_memory_queues_of_each_testing_block(clock: ManualClock) -> None:
    jobs = CloudJobs(clock=clock, queues={"critical": "app-critical"})

    @jobs.job("step")
    def step(payload: Step) -> None:
        raise PermanentError(f"{payload.name} never")

    handler = jobs.lambda_handler()  # at module level, as in an app's code
    try:
        for block in range(2):
            with jobs.testing() as default:
                critical = jobs.backend_of("critical")
                assert isinstance(critical, MemoryBackend)
                jobs.enqueue("step", Step(name=f"default-{block}"))
                jobs.enqueue("step", Step(name=f"critical-{block}"), queue="critical")

                response = handler(
                    event_from((receive_all(default), None), (receive_all(critical), None)), FakeContext()
                )

                assert reported(response) == []
                assert letters_of(default) == {f"default-{block}": "permanent_error"}
                assert letters_of(critical) == {f"critical-{block}": "permanent_error"}
    finally:
        handler.close()
