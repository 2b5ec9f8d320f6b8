"""The planned JSON serializer and parser, over HTTP against the local AWS server: what cloudjobs'
clients send is what a plain boto3 client reads back, binary values included, and the other way round."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from cloudjobs.aws_clients import create_client
from cloudjobs.aws_json import PlannedJSONParser
from cloudjobs.aws_json_requests import PlannedJSONSerializer
from cloudjobs.backends.base import OutgoingMessage, TypedAttribute
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

BINARY = b"\x00\xff\x10binary"


def test_binary_and_typed_attributes_sent_by_cloudjobs_arrive_as_sent(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    sqs_client: SQSClient,
) -> None:
    queue = make_queue()
    backend = make_backend(queue_url=queue.queue_url)
    assert type(backend.client._serializer) is PlannedJSONSerializer  # type: ignore[attr-defined]
    message = OutgoingMessage(
        body='{"plain": "body"}',
        attributes={"text": "plain text"},
        typed_attributes={
            "raw": TypedAttribute("Binary", BINARY),
            "count": TypedAttribute("Number", "42"),
            "label": TypedAttribute("String.label", "labelled"),
        },
    )

    [result] = backend.send([message])

    assert result.error is None
    received = sqs_client.receive_message(
        QueueUrl=queue.queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    assert len(received) == 1
    attributes = received[0]["MessageAttributes"]
    assert attributes["raw"] == {"DataType": "Binary", "BinaryValue": BINARY}
    assert attributes["count"] == {"DataType": "Number", "StringValue": "42"}
    assert attributes["label"] == {"DataType": "String.label", "StringValue": "labelled"}
    assert attributes["text"] == {"DataType": "String", "StringValue": "plain text"}


def test_binary_attributes_sent_by_boto3_are_read_back_by_cloudjobs(
    make_queue: Callable[..., ProvisionedQueue],
    make_backend: Callable[..., SqsBackend],
    sqs_client: SQSClient,
) -> None:
    queue = make_queue()
    sqs_client.send_message(
        QueueUrl=queue.queue_url,
        MessageBody="from boto3",
        MessageAttributes={"raw": {"DataType": "Binary", "BinaryValue": BINARY}},
    )
    backend = make_backend(queue_url=queue.queue_url)

    deliveries = backend.receive(max_messages=10, wait=timedelta(seconds=1))

    assert len(deliveries) == 1
    assert deliveries[0].body == "from boto3"
    assert deliveries[0].typed_attributes == {"raw": TypedAttribute("Binary", BINARY)}


ITEM: dict[str, Any] = {
    "pk": {"S": "planned"},
    "blob": {"B": BINARY},
    "blobs": {"BS": [b"a", b"b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "nothing": {"NULL": True},
    "deep": {"M": {"list": {"L": [{"S": "x"}, {"M": {"b": {"B": b"deeper"}}}, {"BOOL": False}]}}},
}


def test_dynamodb_items_written_by_cloudjobs_read_back_equal_through_both_clients(
    aws_environment: dict[str, str],
) -> None:
    import boto3

    plain: Any = boto3.session.Session().client("dynamodb")
    table = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(table, client=plain)
    try:
        # As cloudjobs' DynamoDB stores build theirs: the table checks the parameters.
        ours: Any = create_client("dynamodb", config=Config(parameter_validation=False))
        assert type(ours._serializer) is PlannedJSONSerializer
        # Answers are parsed by what the endpoint's parser factory hands out for each response.
        assert type(ours._endpoint._response_parser_factory.create_parser("json")) is PlannedJSONParser

        ours.put_item(TableName=table.name, Item=ITEM)

        key = {"pk": {"S": "planned"}}
        by_boto3 = plain.get_item(TableName=table.name, Key=key, ConsistentRead=True)["Item"]
        by_cloudjobs = ours.get_item(TableName=table.name, Key=key, ConsistentRead=True)["Item"]
        assert by_boto3 == by_cloudjobs
        assert by_cloudjobs["blob"] == {"B": BINARY}
        assert by_cloudjobs["deep"]["M"]["list"]["L"][1]["M"]["b"] == {"B": b"deeper"}
        assert sorted(by_cloudjobs["blobs"]["BS"]) == [b"a", b"b"]
    finally:
        delete_table(table, client=plain)
