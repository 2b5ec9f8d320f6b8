"""The Lambda handler end to end over HTTP against the moto server, behind a stand-in event source mapping.

The stand-in does what Lambda's SQS poller does: receive up to ten messages (every attribute), build
the event, invoke the handler, delete the records it did not report, and go on until the queue holds
nothing visible, in flight or delayed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import boto3
import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, PermanentError, RetryableError, Settings
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from cloudjobs.runtimes.aws_lambda import FifoRule, LambdaHandler
from cloudjobs.runtimes.lambda_events import (
    PartialBatchResponse,
    SqsEvent,
    SqsMessageAttribute,
    SqsRecord,
    SqsRecordAttributes,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

DEADLINE_SECONDS = 60.0
REGION = "us-east-1"


class Step(BaseModel):
    name: str
    failures: int = 0


class FakeContext:
    """A fresh invocation's context: the function's whole timeout ahead of it."""

    def __init__(self, timeout: timedelta = timedelta(seconds=60)) -> None:
        self._deadline = time.monotonic() + timeout.total_seconds()

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def record_of(message: MessageTypeDef, queue_arn: str) -> SqsRecord:
    """The record Lambda builds from a received message (its spelling of every field)."""
    message_attributes: dict[str, SqsMessageAttribute] = {}
    for name, value in message.get("MessageAttributes", {}).items():
        attribute: SqsMessageAttribute = {
            "dataType": value["DataType"],
            "stringListValues": [],
            "binaryListValues": [],
        }
        if "StringValue" in value:
            attribute["stringValue"] = value["StringValue"]
        message_attributes[name] = attribute
    system = message.get("Attributes", {})
    attributes: SqsRecordAttributes = {
        "ApproximateReceiveCount": system["ApproximateReceiveCount"],
        "SentTimestamp": system["SentTimestamp"],
    }
    if "AWSTraceHeader" in system:
        attributes["AWSTraceHeader"] = system["AWSTraceHeader"]
    if "MessageGroupId" in system:
        attributes["MessageGroupId"] = system["MessageGroupId"]
    if "MessageDeduplicationId" in system:
        attributes["MessageDeduplicationId"] = system["MessageDeduplicationId"]
    if "SequenceNumber" in system:
        attributes["SequenceNumber"] = system["SequenceNumber"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "md5OfMessageAttributes": message.get("MD5OfMessageAttributes"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


@dataclass
class EventSourceMapping:
    """A local stand-in for Lambda's SQS poller with ``ReportBatchItemFailures``."""

    client: SQSClient
    queue: ProvisionedQueue
    handler: LambdaHandler
    batch_size: int = 10
    invocations: int = 0
    reported: Counter[str] = field(default_factory=Counter)

    def run_until_empty(self) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not self.is_empty():
            assert time.monotonic() < deadline, "the queue did not empty in time"
            self.poll_once()

    def poll_once(self) -> PartialBatchResponse | None:
        """One poll: receive a batch (waiting up to a second) and invoke the handler with it, if any."""
        messages = self.client.receive_message(
            QueueUrl=self.queue.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        return self._invoke(messages) if messages else None

    def _invoke(self, messages: list[MessageTypeDef]) -> PartialBatchResponse:
        event: SqsEvent = {"Records": [record_of(message, self.queue.queue_arn) for message in messages]}
        response: PartialBatchResponse = self.handler(event, FakeContext())
        self.invocations += 1
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        self.reported.update(failed)
        done = [message["ReceiptHandle"] for message in messages if message["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            result = self.client.delete_message_batch(
                QueueUrl=self.queue.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": receipt}
                    for index, receipt in enumerate(done[start : start + 10])
                ],
            )
            assert not result.get("Failed"), result
        return response

    def is_empty(self) -> bool:
        """Whether the queue holds nothing visible, in flight or delayed."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.queue.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return all(int(value) == 0 for value in attributes.values())


def dead_letters(client: SQSClient, queue: ProvisionedQueue) -> dict[str, dict[str, str]]:
    """Every message in the DLQ: its body's job type (or the raw body) → dead-letter details."""
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        messages = client.receive_message(
            QueueUrl=queue.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        for message in messages:
            details = json.loads(message["MessageAttributes"][DEAD_LETTER_ATTRIBUTE]["StringValue"])
            found[message["MessageId"]] = {"body": message.get("Body", ""), **details}
    return found


@pytest.fixture
def table(aws_environment: dict[str, str]) -> Iterator[str]:
    """An idempotency table on the moto server, deleted after the test."""
    client: DynamoDBClient = boto3.session.Session().client("dynamodb")
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    yield spec.name
    delete_table(spec, client=client)
    client.close()


def lambda_app(queue: ProvisionedQueue, table: str | None = None) -> CloudJobs:
    """An app configured as the Terraform example configures the function (queue URL and table)."""
    settings = Settings(
        _env_file=None,
        queue_url=queue.queue_url,
        idempotency_table=table,
        backoff_base_seconds=1,
        backoff_cap_seconds=2,
    )
    return CloudJobs(settings=settings, random=lambda: 0.5)


def test_every_job_succeeds_or_lands_in_the_dlq_with_its_reason_and_idempotent_jobs_run_once(
    make_queue: Callable[..., ProvisionedQueue], sqs_client: SQSClient, table: str
) -> None:
    queue = make_queue(max_receive_count=5)
    jobs = lambda_app(queue, table)
    runs: Counter[str] = Counter()

    @jobs.job("step", max_attempts=4)
    def step(payload: Step, job: Job) -> str:
        runs[payload.name] += 1
        if payload.name.startswith("poison"):
            raise PermanentError(f"{payload.name} can never succeed")
        if job.attempt <= payload.failures:
            raise RetryableError(f"{payload.name} failed attempt {job.attempt}", delay=timedelta(seconds=1))
        return payload.name

    @jobs.job("charge", idempotent=True)
    def charge(payload: Step) -> str:
        runs[payload.name] += 1
        return payload.name

    steps = [Step(name=f"ok-{n}") for n in range(12)]
    steps += [Step(name=f"flaky-{n}", failures=2) for n in range(4)]
    steps += [Step(name="poison-1"), Step(name="exhausted-1", failures=99)]
    jobs.enqueue_many([(step, s) for s in steps])
    for _ in range(3):  # the same charge, enqueued three times
        charge.enqueue(Step(name="charge-order-7"), idempotency_key="order-7")
    sqs_client.send_message(QueueUrl=queue.queue_url, MessageBody='{"cloudjobs": 1, "type": "step"}')

    handler = jobs.lambda_handler()
    try:
        mapping = EventSourceMapping(sqs_client, queue, handler)
        mapping.run_until_empty()
    finally:
        handler.close()

    assert all(runs[f"ok-{n}"] == 1 for n in range(12))
    assert all(runs[f"flaky-{n}"] == 3 for n in range(4))
    assert runs["charge-order-7"] == 1
    assert runs["exhausted-1"] == 4
    letters = dead_letters(sqs_client, queue)
    reasons = sorted(
        (letter["reason"], json.loads(letter["body"]).get("payload", {}).get("name", "-"))
        for letter in letters.values()
    )
    assert reasons == [
        ("malformed_envelope", "-"),
        ("max_attempts", "exhausted-1"),
        ("permanent_error", "poison-1"),
    ]
    assert mapping.reported  # retries went back through batchItemFailures, not whole-batch failures


@pytest.mark.parametrize("rule", list(FifoRule))
def test_fifo_groups_keep_their_order_through_retries(
    make_queue: Callable[..., ProvisionedQueue], sqs_client: SQSClient, rule: FifoRule
) -> None:
    queue = make_queue(fifo=True, max_receive_count=5)
    jobs = lambda_app(queue)
    completed: list[str] = []
    attempts: Counter[str] = Counter()

    @jobs.job("step")
    def step(payload: Step, job: Job) -> None:
        attempts[payload.name] += 1
        if job.attempt <= payload.failures:
            raise RetryableError("not yet", delay=timedelta(seconds=1))
        completed.append(payload.name)

    for n in range(4):
        for group in ("a", "b"):
            failures = 1 if (group, n) in {("a", 0), ("b", 2)} else 0
            step.enqueue(Step(name=f"{group}{n}", failures=failures), group_id=group)

    handler = jobs.lambda_handler(fifo_rule=rule)
    try:
        EventSourceMapping(sqs_client, queue, handler).run_until_empty()
    finally:
        handler.close()

    for group in ("a", "b"):
        assert [name for name in completed if name.startswith(group)] == [f"{group}{n}" for n in range(4)]
    assert sorted(completed) == sorted(f"{group}{n}" for group in "ab" for n in range(4))
    # The first record fails once whatever the rule. (A record released unrun still spends a receive,
    # so b2 may reach its first run at attempt 2 and pass: that is SQS's receive count at work.)
    assert attempts["a0"] == 2
