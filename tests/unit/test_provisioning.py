"""QueueSpec: the one description of a queue and its DLQ, validated against SQS's ranges."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing

import pytest

from cloudjobs.errors import ConfigurationError
from cloudjobs.provisioning import (
    DEFAULT_DLQ_RETENTION_SECONDS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_MESSAGE_RETENTION_SECONDS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    ProvisionedQueue,
    QueueSpec,
    provision_queue,
)


def test_defaults_match_sqs_defaults() -> None:
    spec = QueueSpec("jobs")

    assert spec.visibility_timeout_seconds == DEFAULT_VISIBILITY_TIMEOUT_SECONDS == 30
    assert spec.max_receive_count == DEFAULT_MAX_RECEIVE_COUNT == 5
    assert spec.message_retention_seconds == DEFAULT_MESSAGE_RETENTION_SECONDS == 4 * 24 * 3600
    assert spec.dlq_retention_seconds == DEFAULT_DLQ_RETENTION_SECONDS == 14 * 24 * 3600
    assert spec.max_message_size == DEFAULT_MAX_MESSAGE_SIZE == 1024 * 1024
    assert spec.delay_seconds == 0


def test_dead_letter_queue_names_follow_the_queue_name() -> None:
    assert QueueSpec("jobs").dlq_name == "jobs-dlq"
    assert QueueSpec("jobs.fifo", fifo=True).dlq_name == "jobs-dlq.fifo"


@pytest.mark.parametrize(
    ("name", "fifo"),
    [
        ("jobs", True),
        ("jobs.fifo", False),
        ("", False),
        ("has space", False),
        ("dots.not.allowed", False),
        ("x" * 77, False),
        ("x" * 72 + ".fifo", True),
    ],
)
def test_invalid_names_are_refused(name: str, fifo: bool) -> None:
    with pytest.raises(ConfigurationError) as raised:
        QueueSpec(name, fifo=fifo)

    assert raised.value.setting == "name"


def test_longest_names_whose_dlq_still_fits_are_accepted() -> None:
    assert len(QueueSpec("x" * 76).dlq_name) == 80
    assert len(QueueSpec("x" * 71 + ".fifo", fifo=True).dlq_name) == 80


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("visibility_timeout_seconds", -1),
        ("visibility_timeout_seconds", 43_201),
        ("max_receive_count", 0),
        ("max_receive_count", 1_001),
        ("message_retention_seconds", 59),
        ("dlq_retention_seconds", 1_209_601),
        ("max_message_size", 1_023),
        ("max_message_size", 1_048_577),
        ("delay_seconds", -1),
        ("delay_seconds", 901),
    ],
)
def test_values_outside_sqs_ranges_are_refused(setting: str, value: int) -> None:
    with pytest.raises(ConfigurationError) as raised:
        QueueSpec("jobs", **{setting: value})  # type: ignore[arg-type]

    assert raised.value.setting == setting


def test_range_bounds_are_accepted() -> None:
    QueueSpec(
        "jobs",
        visibility_timeout_seconds=43_200,
        max_receive_count=1_000,
        message_retention_seconds=60,
        dlq_retention_seconds=1_209_600,
        max_message_size=1_024,
        delay_seconds=900,
    )


def test_dlq_must_keep_messages_longer_than_the_queue() -> None:
    with pytest.raises(ConfigurationError) as raised:
        QueueSpec("jobs", message_retention_seconds=1_209_600, dlq_retention_seconds=1_209_600)

    assert raised.value.setting == "dlq_retention_seconds"


def test_content_based_deduplication_needs_a_fifo_queue() -> None:
    with pytest.raises(ConfigurationError):
        QueueSpec("jobs", content_based_deduplication=True)

    assert QueueSpec("jobs.fifo", fifo=True, content_based_deduplication=True).content_based_deduplication


def test_queue_attributes_carry_the_redrive_policy() -> None:
    spec = QueueSpec("jobs", visibility_timeout_seconds=60, max_receive_count=3)
    dlq_arn = "arn:aws:sqs:us-east-1:123456789012:jobs-dlq"

    attributes = spec.queue_attributes(dlq_arn=dlq_arn)

    assert attributes["VisibilityTimeout"] == "60"
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
    assert "FifoQueue" not in attributes


def test_fifo_attributes_are_set_on_both_queues() -> None:
    spec = QueueSpec("jobs.fifo", fifo=True)

    assert spec.dlq_attributes()["FifoQueue"] == "true"
    assert spec.queue_attributes(dlq_arn="arn:aws:sqs:us-east-1:1:jobs-dlq.fifo")["FifoQueue"] == "true"
    assert spec.dlq_attributes()["MessageRetentionPeriod"] == str(DEFAULT_DLQ_RETENTION_SECONDS)


def test_provisioned_queue_names_come_from_the_arns() -> None:
    queue = ProvisionedQueue(
        queue_url="http://localhost:4566/000000000000/jobs",
        dlq_url="http://localhost:4566/000000000000/jobs-dlq",
        queue_arn="arn:aws:sqs:us-east-1:000000000000:jobs",
        dlq_arn="arn:aws:sqs:us-east-1:000000000000:jobs-dlq",
    )

    assert (queue.name, queue.dlq_name) == ("jobs", "jobs-dlq")


def test_provisioning_creates_the_dlq_first_and_lets_only_its_queue_redrive_into_it() -> None:
    # moto accepts RedriveAllowPolicy but never returns it, so this one is checked on the requests.
    import boto3
    from botocore.stub import Stubber

    spec = QueueSpec("jobs", max_receive_count=4)
    queue_url, dlq_url = "https://sqs.example/1/jobs", "https://sqs.example/1/jobs-dlq"
    queue_arn, dlq_arn = "arn:aws:sqs:us-east-1:1:jobs", "arn:aws:sqs:us-east-1:1:jobs-dlq"
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    client = session.client("sqs")
    with closing(client), Stubber(client) as stubber:
        stubber.add_response(
            "create_queue",
            {"QueueUrl": dlq_url},
            {"QueueName": "jobs-dlq", "Attributes": spec.dlq_attributes()},
        )
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": dlq_arn}},
            {"QueueUrl": dlq_url, "AttributeNames": ["QueueArn"]},
        )
        stubber.add_response(
            "create_queue",
            {"QueueUrl": queue_url},
            {"QueueName": "jobs", "Attributes": spec.queue_attributes(dlq_arn=dlq_arn)},
        )
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": queue_arn}},
            {"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]},
        )
        allow_policy = {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]}
        stubber.add_response(
            "set_queue_attributes",
            {},
            {"QueueUrl": dlq_url, "Attributes": {"RedriveAllowPolicy": json.dumps(allow_policy)}},
        )

        provisioned = provision_queue(spec, client=client)

        stubber.assert_no_pending_responses()
    assert provisioned == ProvisionedQueue(queue_url, dlq_url, queue_arn, dlq_arn)


def test_importing_provisioning_does_not_load_boto3() -> None:
    code = "import sys, cloudjobs.provisioning; print('boto3' in sys.modules, 'botocore' in sys.modules)"

    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert output.split() == ["False", "False"]
