"""The Lambda handler on SQS sample events shaped as AWS, Powertools and OpenTelemetry publish them
(tests/events/README.md says where each comes from): none raises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, Settings
from cloudjobs.queues import QueueArn
from cloudjobs.runtimes.aws_lambda import LambdaHandler
from cloudjobs.runtimes.lambda_events import SqsEvent
from tests.unit.test_aws_lambda import FakeContext, reported

EVENTS = sorted((Path(__file__).parent.parent / "events").glob("*.json"))


def load(path: Path) -> SqsEvent:
    event: SqsEvent = json.loads(path.read_text())
    return event


def queue_name(event: SqsEvent) -> str | None:
    """The SQS queue the event's records name, when they name one."""
    arn = QueueArn.parse(event["Records"][0].get("eventSourceARN", ""))
    return arn.name if arn is not None else None


def app_on(backend: MemoryBackend, clock: ManualClock) -> CloudJobs:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)
    jobs.job("noop")(lambda payload: None)
    return jobs


@pytest.fixture
def run() -> Iterator[list[LambdaHandler]]:
    handlers: list[LambdaHandler] = []
    yield handlers
    for handler in handlers:
        handler.close()


def test_the_sample_events_are_there() -> None:
    names = {path.name.split("-")[0] for path in EVENTS}
    assert {"aws", "powertools", "opentelemetry"} <= names
    assert any(queue_name(load(path)) == "fifo.fifo" for path in EVENTS)


@pytest.mark.parametrize("path", EVENTS, ids=lambda path: path.stem)
def test_a_sample_event_from_a_queue_the_app_does_not_know_is_reported_record_by_record(
    path: Path, clock: ManualClock, run: list[LambdaHandler]
) -> None:
    event = load(path)
    handler = app_on(MemoryBackend("not-the-samples-queue", clock=clock), clock).lambda_handler()
    run.append(handler)

    response = handler(event, FakeContext())

    assert reported(response) == [record["messageId"] for record in event["Records"]]


@pytest.mark.parametrize("path", EVENTS, ids=lambda path: path.stem)
def test_a_sample_event_from_the_apps_queue_is_dead_lettered_or_reported_record_by_record(
    path: Path, clock: ManualClock, run: list[LambdaHandler]
) -> None:
    event = load(path)
    backend = MemoryBackend(queue_name(event) or "jobs", clock=clock)
    handler = app_on(backend, clock).lambda_handler()
    run.append(handler)

    response = handler(event, FakeContext())

    # None of these bodies is a cloudjobs envelope: a record that can be read is dead-lettered with
    # its reason (and not reported); one that cannot, or whose ARN names no queue, is reported.
    assert backend.dead_letter_queue is not None
    letters = backend.dead_letter_queue.messages()
    assert len(letters) + len(reported(response)) == len(event["Records"])
    assert {json.loads(letter.attributes["cloudjobs.dead_letter"])["reason"] for letter in letters} <= {
        "unroutable",
        "malformed_envelope",
    }
    if queue_name(event) is None:
        assert letters == []


def test_a_record_whose_binary_attribute_is_not_base64_is_reported_and_the_rest_runs(
    clock: ManualClock, run: list[LambdaHandler]
) -> None:
    event = load(next(path for path in EVENTS if path.name == "powertools-sqs-event.json"))
    backend = MemoryBackend("my-queue", clock=clock)
    handler = app_on(backend, clock).lambda_handler()
    run.append(handler)

    response = handler(event, FakeContext())

    unreadable, readable = event["Records"]
    assert reported(response) == [unreadable["messageId"]]
    assert backend.dead_letter_queue is not None
    [letter] = backend.dead_letter_queue.messages()
    assert letter.body == readable["body"]
