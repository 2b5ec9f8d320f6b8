"""provision_queue over real boto3 and HTTP, against the session's moto server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from cloudjobs.provisioning import QueueSpec, delete_queue, provision_queue

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient


@pytest.fixture
def spec(sqs_client: SQSClient) -> Iterator[QueueSpec]:
    spec = QueueSpec(
        f"provisioned-{uuid.uuid4().hex[:12]}", visibility_timeout_seconds=40, max_receive_count=2
    )
    yield spec
    delete_queue(spec, client=sqs_client)


def _attributes(client: SQSClient, queue_url: str) -> dict[str, str]:
    attributes = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    return {str(name): value for name, value in attributes.items()}


def test_queue_redrives_to_its_dlq(spec: QueueSpec, sqs_client: SQSClient) -> None:
    queue = provision_queue(spec, client=sqs_client)

    queue_attributes = _attributes(sqs_client, queue.queue_url)
    dlq_attributes = _attributes(sqs_client, queue.dlq_url)
    redrive_policy = json.loads(queue_attributes["RedrivePolicy"])

    assert (queue.name, queue.dlq_name) == (spec.name, spec.dlq_name)
    assert redrive_policy["deadLetterTargetArn"] == queue.dlq_arn
    assert int(redrive_policy["maxReceiveCount"]) == 2
    assert queue_attributes["VisibilityTimeout"] == "40"
    assert int(dlq_attributes["MessageRetentionPeriod"]) == spec.dlq_retention_seconds
    # moto stores RedriveAllowPolicy but never returns it: the unit tests check that it is set.


def test_provisioning_twice_is_harmless_and_applies_changes(spec: QueueSpec, sqs_client: SQSClient) -> None:
    first = provision_queue(spec, client=sqs_client)
    again = provision_queue(spec, client=sqs_client)
    changed = provision_queue(
        QueueSpec(spec.name, visibility_timeout_seconds=90, max_receive_count=2), client=sqs_client
    )

    assert again == first == changed
    assert _attributes(sqs_client, first.queue_url)["VisibilityTimeout"] == "90"


def test_message_received_past_max_receive_count_moves_to_the_dlq(
    spec: QueueSpec, sqs_client: SQSClient
) -> None:
    queue = provision_queue(spec, client=sqs_client)
    sqs_client.send_message(QueueUrl=queue.queue_url, MessageBody="poison")

    deadline = time.monotonic() + 10
    moved: list[str] = []
    while not moved and time.monotonic() < deadline:
        # Release every receive at once (visibility 0) so the receive count climbs.
        sqs_client.receive_message(QueueUrl=queue.queue_url, WaitTimeSeconds=1, VisibilityTimeout=0)
        response = sqs_client.receive_message(QueueUrl=queue.dlq_url, WaitTimeSeconds=0)
        moved = [message.get("Body", "") for message in response.get("Messages", [])]

    assert moved == ["poison"]


def test_delete_queue_removes_both_queues_and_tolerates_missing_ones(
    sqs_client: SQSClient,
) -> None:
    spec = QueueSpec(f"doomed-{uuid.uuid4().hex[:12]}")
    provision_queue(spec, client=sqs_client)

    delete_queue(spec, client=sqs_client)
    delete_queue(spec, client=sqs_client)

    remaining = sqs_client.list_queues(QueueNamePrefix=spec.name).get("QueueUrls", [])
    assert remaining == []
