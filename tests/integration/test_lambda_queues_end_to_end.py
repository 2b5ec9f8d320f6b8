"""One Lambda handler behind three event source mappings, over HTTP against the moto server, with no
queue configured: each record's queue, DLQ and redrive threshold come from its eventSourceARN."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from cloudjobs import CloudJobs, Job, PermanentError, RetryableError, Settings
from cloudjobs.provisioning import ProvisionedQueue
from cloudjobs.runtimes.lambda_events import SqsEvent
from tests.integration.test_lambda_end_to_end import (
    DEADLINE_SECONDS,
    EventSourceMapping,
    FakeContext,
    Step,
    dead_letters,
    record_of,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

_QUEUE_SETTINGS = ("CLOUDJOBS_QUEUE_URL", "CLOUDJOBS_QUEUE_NAME", "CLOUDJOBS_DLQ_URL", "CLOUDJOBS_QUEUES")


def register(jobs: CloudJobs, completed: list[str], runs: Counter[str]) -> None:
    @jobs.job("step", max_attempts=3)
    def step(payload: Step, job: Job) -> None:
        runs[payload.name] += 1
        if payload.name.startswith("poison"):
            raise PermanentError(f"{payload.name} can never succeed")
        if job.attempt <= payload.failures:
            raise RetryableError(f"{payload.name} failed attempt {job.attempt}", delay=timedelta(seconds=1))
        completed.append(payload.name)


def letters_by_name(client: SQSClient, queue: ProvisionedQueue) -> dict[str, str]:
    """The queue's DLQ: step name → dead-letter reason."""
    return {
        json.loads(letter["body"])["payload"]["name"]: letter["reason"]
        for letter in dead_letters(client, queue).values()
    }


def test_one_handler_serves_three_queues_named_only_by_their_records_each_dead_lettering_to_its_own_dlq(
    make_queue: Callable[..., ProvisionedQueue],
    sqs_client: SQSClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in _QUEUE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    standard = make_queue(max_receive_count=5)
    strict = make_queue(max_receive_count=2)  # redrives after two receives
    fifo = make_queue(fifo=True, max_receive_count=5)
    producer = CloudJobs(
        settings=Settings(_env_file=None, queue_url=standard.queue_url),
        queues={"strict": strict.queue_url, "orders": fifo.queue_url},
    )
    # The function's app: no queue at all, as a function behind several mappings is configured.
    consumer = CloudJobs(
        settings=Settings(_env_file=None, backoff_base_seconds=1, backoff_cap_seconds=2), random=lambda: 0.5
    )
    completed: list[str] = []
    runs: Counter[str] = Counter()
    register(producer, [], Counter())
    register(consumer, completed, runs)
    producer.enqueue_many(
        [
            ("step", Step(name="ok-standard")),
            ("step", Step(name="flaky-standard", failures=1)),
            ("step", Step(name="poison-standard")),
            ("step", Step(name="exhausted-standard", failures=99)),
        ]
    )
    producer.enqueue_many(
        [("step", Step(name="ok-strict")), ("step", Step(name="exhausted-strict", failures=99))],
        queue="strict",
    )
    for name, failures in [("a0", 1), ("a1", 0), ("a2", 0)]:
        producer.enqueue("step", Step(name=name, failures=failures), queue="orders", group_id="a")
    for name in ("poison-b0", "b1"):
        producer.enqueue("step", Step(name=name), queue="orders", group_id="b")

    handler = consumer.lambda_handler()  # records from any queue of the app
    mappings = [EventSourceMapping(sqs_client, queue, handler) for queue in (standard, strict, fifo)]
    try:
        # The first three invocations: one batch from each mapping.
        first = [mapping.poll_once() for mapping in mappings]
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not all(mapping.is_empty() for mapping in mappings):
            assert time.monotonic() < deadline, "the queues did not empty in time"
            for mapping in mappings:
                mapping.poll_once()
    finally:
        handler.close()

    assert all(response is not None for response in first)
    assert [mapping.invocations > 1 for mapping in mappings] == [True, True, True]  # retries came back
    assert letters_by_name(sqs_client, standard) == {
        "poison-standard": "permanent_error",
        "exhausted-standard": "max_attempts",
    }
    assert letters_by_name(sqs_client, strict) == {"exhausted-strict": "max_receives"}
    assert letters_by_name(sqs_client, fifo) == {"poison-b0": "permanent_error"}
    assert (runs["exhausted-standard"], runs["exhausted-strict"]) == (3, 2)
    assert sorted(completed) == sorted(["ok-standard", "flaky-standard", "ok-strict", "a0", "a1", "a2", "b1"])
    assert [name for name in completed if name in ("a0", "a1", "a2")] == ["a0", "a1", "a2"]


def test_a_record_of_a_queue_that_does_not_exist_is_a_batch_item_failure_and_the_rest_runs(
    make_queue: Callable[..., ProvisionedQueue],
    sqs_client: SQSClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in _QUEUE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    queue = make_queue()
    producer = CloudJobs(settings=Settings(_env_file=None, queue_url=queue.queue_url))
    consumer = CloudJobs(settings=Settings(_env_file=None))
    completed: list[str] = []
    register(producer, [], Counter())
    register(consumer, completed, Counter())
    producer.enqueue_many([("step", Step(name="lost")), ("step", Step(name="found"))])
    messages = sqs_client.receive_message(
        QueueUrl=queue.queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    assert len(messages) == 2
    lost, found = sorted(
        messages, key=lambda message: json.loads(message["Body"])["payload"]["name"] != "lost"
    )
    missing = f"test-missing-{uuid.uuid4().hex[:12]}"
    event: SqsEvent = {
        "Records": [
            record_of(lost, queue.queue_arn.rsplit(":", 1)[0] + f":{missing}"),
            record_of(found, queue.queue_arn),
        ]
    }

    handler = consumer.lambda_handler()
    try:
        with caplog.at_level(logging.ERROR, logger="cloudjobs.lambda"):
            response = handler(event, FakeContext())
    finally:
        handler.close()

    assert response == {"batchItemFailures": [{"itemIdentifier": lost["MessageId"]}]}
    assert completed == ["found"]
    [error] = [record.getMessage() for record in caplog.records if record.name == "cloudjobs.lambda"]
    assert repr(missing) in error
    assert "does not exist" in error
