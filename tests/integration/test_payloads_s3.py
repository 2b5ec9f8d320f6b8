"""Payloads of any size over HTTP against moto's SQS and S3: a 5 MiB job through a real worker and
a Lambda invocation, encryption at rest, missing bodies, purges, and messages passing both ways
between cloudjobs and AWS's SQS extended client (run as its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, Settings
from cloudjobs.envelope import decode
from cloudjobs.payloads.pointer import POINTER_CLASS, SIZE_ATTRIBUTE, read_pointer
from cloudjobs.payloads.store import object_key
from cloudjobs.provisioning import ProvisionedQueue
from tests.behaviour.conftest import running, wait_for
from tests.integration.test_lambda_end_to_end import EventSourceMapping

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sqs.client import SQSClient

MIB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Export(BaseModel):
    rows: str


@pytest.fixture
def s3_client(aws_environment: dict[str, str]) -> Iterator[S3Client]:
    client: S3Client = boto3.session.Session().client("s3")
    yield client
    client.close()


@pytest.fixture
def bucket(s3_client: S3Client) -> Iterator[str]:
    name = f"payloads-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    yield name
    for item in s3_client.list_objects_v2(Bucket=name).get("Contents", []):
        s3_client.delete_object(Bucket=name, Key=item["Key"])
    s3_client.delete_bucket(Bucket=name)


def _keys(client: S3Client, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def _app(queue: ProvisionedQueue, bucket: str, runs: list[tuple[str, int]], **settings: Any) -> CloudJobs:
    jobs = CloudJobs(
        settings=Settings(
            _env_file=None, queue_url=queue.queue_url, payload_bucket=bucket, wait_time_seconds=1, **settings
        )
    )
    lock = threading.Lock()

    @jobs.job("export")
    def export(payload: Export, job: Job) -> None:
        with lock:
            runs.append((job.id, len(payload.rows)))

    return jobs


def _peek(client: SQSClient, queue_url: str) -> list[Any]:
    """The queue's messages, received and made visible again at once."""
    messages = client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    ).get("Messages", [])
    for message in messages:
        client.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return messages


def _depth(client: SQSClient, queue_url: str) -> int:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_a_five_mib_job_goes_through_s3_and_a_real_worker(
    make_queue: Callable[..., ProvisionedQueue], bucket: str, s3_client: S3Client, sqs_client: SQSClient
) -> None:
    queue = make_queue()
    runs: list[tuple[str, int]] = []
    jobs = _app(queue, bucket, runs)
    rows = "r" * (5 * MIB)
    job_id = jobs.enqueue("export", Export(rows=rows))

    (message,) = _peek(sqs_client, queue.queue_url)
    assert read_pointer(message["Body"]) is not None
    assert json.loads(message["Body"])[0] == POINTER_CLASS
    key = object_key("export", job_id)
    size = s3_client.head_object(Bucket=bucket, Key=key)
    assert message["MessageAttributes"][SIZE_ATTRIBUTE] == {
        "DataType": "Number",
        "StringValue": str(size["ContentLength"]),
    }
    assert size["ServerSideEncryption"] == "AES256"

    with running(jobs, concurrency=2):
        wait_for(lambda: runs == [(job_id, len(rows))] and _depth(sqs_client, queue.queue_url) == 0)
    assert _keys(s3_client, bucket) == [key]  # kept by default: the bucket's lifecycle rule expires it


def test_with_a_kms_key_bodies_are_written_with_sse_kms(
    make_queue: Callable[..., ProvisionedQueue], bucket: str, s3_client: S3Client
) -> None:
    kms = boto3.session.Session().client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    jobs = _app(make_queue(), bucket, [], payload_kms_key_id=key_id)
    job_id = jobs.enqueue("export", Export(rows="k" * (2 * MIB)))
    head = s3_client.head_object(Bucket=bucket, Key=object_key("export", job_id))
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head.get("SSEKMSKeyId", "")
    kms.close()


def test_a_lambda_invocation_reads_the_stored_body(
    make_queue: Callable[..., ProvisionedQueue], bucket: str, sqs_client: SQSClient
) -> None:
    queue = make_queue()
    runs: list[tuple[str, int]] = []
    jobs = _app(queue, bucket, runs)
    job_id = jobs.enqueue("export", Export(rows="l" * (2 * MIB)))
    EventSourceMapping(sqs_client, queue, jobs.lambda_handler()).run_until_empty()
    assert runs == [(job_id, 2 * MIB)]


def test_a_missing_body_is_dead_lettered_and_a_purge_deletes_bodies(
    make_queue: Callable[..., ProvisionedQueue], bucket: str, s3_client: S3Client, sqs_client: SQSClient
) -> None:
    queue = make_queue()
    runs: list[tuple[str, int]] = []
    jobs = _app(queue, bucket, runs)
    gone = jobs.enqueue("export", Export(rows="g" * (2 * MIB)))
    s3_client.delete_object(Bucket=bucket, Key=object_key("export", gone))

    @jobs.job("broken")
    def broken(payload: Export) -> None:
        raise ValueError("never works")

    kept = jobs.enqueue(
        "broken",
        Export(rows="b" * (2 * MIB)),
    )
    with running(jobs, concurrency=2):
        wait_for(lambda: _depth(sqs_client, queue.queue_url) == 0 and _depth(sqs_client, queue.dlq_url) == 2)
    assert runs == []
    reasons = {job.job_id: job.reason for job in jobs.dlq.list()}
    assert reasons[gone] == "payload_missing"
    assert reasons[kept] == "max_attempts"
    assert _keys(s3_client, bucket) == [object_key("broken", kept)]  # the dead letter reuses its pointer
    assert jobs.dlq.purge() == 2
    assert _keys(s3_client, bucket) == []


def _peer(*arguments: str, stdin: str = "") -> Any:
    answer = subprocess.run(
        [sys.executable, "-m", "tests.integration.extended_client_peer", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def test_a_message_the_extended_client_offloads_runs_as_a_cloudjobs_job(
    make_queue: Callable[..., ProvisionedQueue], bucket: str, s3_client: S3Client, sqs_client: SQSClient
) -> None:
    queue = make_queue()
    runs: list[tuple[str, int]] = []
    jobs = _app(queue, bucket, runs)
    envelope = {
        "cloudjobs": 1,
        "id": "from-the-extended-client",
        "type": "export",
        "payload": {"rows": "e" * (300 * 1024)},
        "correlation_id": "peer",
        "enqueued_at": "2026-12-02T12:00:00Z",
    }
    _peer("send", queue.queue_url, bucket, stdin=json.dumps(envelope))
    (message,) = _peek(sqs_client, queue.queue_url)
    assert read_pointer(message["Body"]) is not None  # the peer stored it: a pointer on the queue
    with running(jobs, concurrency=1):
        wait_for(lambda: bool(runs) and _depth(sqs_client, queue.queue_url) == 0)
    assert runs == [("from-the-extended-client", 300 * 1024)]


def test_a_job_cloudjobs_offloads_is_read_whole_by_the_extended_client(
    make_queue: Callable[..., ProvisionedQueue], bucket: str, s3_client: S3Client
) -> None:
    queue = make_queue()
    jobs = _app(queue, bucket, [])
    rows = "c" * (2 * MIB)
    job_id = jobs.enqueue("export", Export(rows=rows))
    (message,) = _peer("receive", queue.queue_url)
    envelope = decode(message["Body"])  # the stored body, as the peer read it back
    assert envelope.id == job_id
    assert envelope.payload == {"rows": rows}
    assert message["MessageAttributes"]["cloudjobs.type"]["StringValue"] == "export"
    assert _keys(s3_client, bucket) == []  # the peer deletes the body with the message
