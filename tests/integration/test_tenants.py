"""Tenants over HTTP: the message group really reaches SQS on a standard queue, from a single send
and from a batch, and a queue named by ``CLOUDJOBS_QUEUES`` receives what is routed to it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from cloudjobs import CloudJobs
from cloudjobs.provisioning import ProvisionedQueue

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

MakeQueue = Callable[..., ProvisionedQueue]


def _raw_groups(
    client: SQSClient, queue_url: str, *, expected: int, seconds: float = 10
) -> dict[str, str | None]:
    """Job type (and payload account) → MessageGroupId, as a plain boto3 receive reports them."""
    groups: dict[str, str | None] = {}
    deadline = time.monotonic() + seconds
    while len(groups) < expected and time.monotonic() < deadline:
        response = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["MessageGroupId"],
        )
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            label = " ".join([body["type"], *body["payload"].values()])
            groups[label] = message.get("Attributes", {}).get("MessageGroupId")
    return groups


@pytest.mark.usefixtures("aws_environment")
def test_tenants_reach_a_standard_queue_as_message_groups_from_sends_and_batches(
    make_queue: MakeQueue, sqs_client: SQSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    default, bulk = make_queue(), make_queue()
    monkeypatch.setenv("CLOUDJOBS_QUEUE_URL", default.queue_url)
    monkeypatch.setenv("CLOUDJOBS_QUEUES", f"bulk={bulk.queue_arn.rsplit(':', 1)[-1]}")
    jobs = CloudJobs()

    @jobs.job("export", queue="bulk", tenant="account")
    def export(payload: dict[str, str]) -> None: ...

    jobs.enqueue("single", {}, queue="bulk", tenant="acme")
    jobs.enqueue_many([("export", {"account": "initech"}), ("plain", {})], queue="bulk")
    jobs.enqueue_many([("export", {"account": "globex"})])

    assert _raw_groups(sqs_client, bulk.queue_url, expected=4) == {
        "single": "acme",
        "export initech": "initech",
        "plain": None,
        "export globex": "globex",
    }
    assert _raw_groups(sqs_client, default.queue_url, expected=1, seconds=2) == {}
