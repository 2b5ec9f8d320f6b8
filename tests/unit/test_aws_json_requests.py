"""The planned JSON serializer builds botocore's requests, byte for byte, for less work."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import boto3
import pytest
from botocore.model import OperationModel
from botocore.serialize import JSONSerializer, create_serializer
from botocore.session import get_session
from botocore.validate import ParamValidationDecorator

from cloudjobs.aws_clients import create_client, new_session
from cloudjobs.aws_json_requests import PlannedJSONSerializer
from tests.unit.at_once import results_at_once
from tests.unit.own_json_model import own_model


def _operation(service: str, name: str) -> OperationModel:
    return get_session().get_service_model(service).operation_model(name)


def _both(operation: OperationModel, parameters: Any) -> tuple[Any, Any]:
    botocores = create_serializer("json", include_validation=False)
    return botocores.serialize_to_request(
        parameters, operation
    ), PlannedJSONSerializer().serialize_to_request(parameters, operation)


QUEUE = "https://sqs.us-east-1.amazonaws.com/1/q"
SEND_BATCH = {
    "QueueUrl": QUEUE,
    "Entries": [
        {
            "Id": "0",
            "MessageBody": '{"cloudjobs": 1}',
            "MessageAttributes": {
                "cloudjobs.type": {"DataType": "String", "StringValue": "send_welcome_email"},
                "raw": {"DataType": "Binary", "BinaryValue": b"\x00\xffbytes"},
                "lists": {
                    "DataType": "String",
                    "StringListValues": ["a", "b"],
                    "BinaryListValues": [b"x", b""],
                },
            },
            "MessageSystemAttributes": {
                "AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-a-b"}
            },
            "DelaySeconds": 5,
        },
        {"Id": "1", "MessageBody": "plain", "MessageGroupId": "g", "MessageDeduplicationId": "d"},
        {"MessageBody": "keys in another order", "Id": "2", "MessageAttributes": {}},
    ],
}


@pytest.mark.parametrize(
    ("operation", "parameters"),
    [
        ("SendMessageBatch", SEND_BATCH),
        (
            "SendMessage",
            {
                "QueueUrl": QUEUE,
                "MessageBody": "b",
                "MessageAttributes": {"b": {"DataType": "Binary", "BinaryValue": "str"}},
            },
        ),
        ("DeleteMessageBatch", {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "ReceiptHandle": "r" * 180}]}),
        (
            "ReceiveMessage",
            {
                "QueueUrl": QUEUE,
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 20,
                "MessageAttributeNames": ["All"],
                "MessageSystemAttributeNames": ("ApproximateReceiveCount", "SentTimestamp"),
                "VisibilityTimeout": 30,
            },
        ),
        (
            "ChangeMessageVisibilityBatch",
            {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "ReceiptHandle": "r", "VisibilityTimeout": 0}]},
        ),
        ("GetQueueAttributes", {"QueueUrl": QUEUE, "AttributeNames": ["All"]}),
        ("CreateQueue", {"QueueName": "q", "Attributes": {"VisibilityTimeout": "30"}, "tags": {"team": "a"}}),
        ("ListQueues", {}),
    ],
)
def test_sqs_requests_are_botocores_byte_for_byte(operation: str, parameters: Any) -> None:
    expected, planned = _both(_operation("sqs", operation), parameters)

    assert planned == expected
    assert planned["body"] == expected["body"]  # the same bytes, keys in the same order


def test_binary_attributes_are_sent_as_base64() -> None:
    _, planned = _both(_operation("sqs", "SendMessageBatch"), SEND_BATCH)

    entry = json.loads(planned["body"])["Entries"][0]
    assert entry["MessageAttributes"]["raw"]["BinaryValue"] == "AP9ieXRlcw=="
    assert entry["MessageAttributes"]["lists"]["BinaryListValues"] == ["eA==", ""]
    assert SEND_BATCH["Entries"][0]["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\xffbytes"  # type: ignore[index]


ITEM = {
    "pk": {"S": "job#1"},
    "n": {"N": "12.5"},
    "blob": {"B": b"\x01\x02"},
    "blobs": {"BS": [b"a", b"b"]},
    "numbers": {"NS": ["1", "2"]},
    "strings": {"SS": ["x", "y"]},
    "nothing": {"NULL": True},
    "flag": {"BOOL": False},
    "deep": {"M": {"list": {"L": [{"S": "x"}, {"M": {"b": {"B": b"deeper"}}}, {"L": []}]}}},
}


@pytest.mark.parametrize(
    ("operation", "parameters"),
    [
        (
            "UpdateItem",
            {
                "TableName": "t",
                "Key": {"pk": {"S": "job#1"}},
                "UpdateExpression": "SET #s = :s, #b = :b",
                "ConditionExpression": "attribute_not_exists(#pk)",
                "ExpressionAttributeNames": {"#s": "status", "#b": "blob", "#pk": "pk"},
                "ExpressionAttributeValues": {":s": {"S": "in_progress"}, ":b": ITEM["deep"]},
                "ReturnValues": "ALL_NEW",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            },
        ),
        ("PutItem", {"TableName": "t", "Item": ITEM}),
        ("GetItem", {"TableName": "t", "Key": {"pk": {"S": "x"}}, "ConsistentRead": True}),
        ("BatchGetItem", {"RequestItems": {"t": {"Keys": [{"pk": {"S": "a"}}, {"pk": {"B": b"b"}}]}}}),
        (
            "BatchWriteItem",
            {
                "RequestItems": {
                    "t": [{"PutRequest": {"Item": ITEM}}, {"DeleteRequest": {"Key": {"pk": {"S": "x"}}}}]
                }
            },
        ),
        (
            "Query",
            {
                "TableName": "t",
                "KeyConditionExpression": "pk = :p",
                "ExpressionAttributeValues": {":p": {"S": "a"}},
                "ExclusiveStartKey": {"pk": {"B": b"\x00"}},
                "Limit": 10,
            },
        ),
        (
            "TransactWriteItems",
            {"TransactItems": [{"Put": {"TableName": "t", "Item": ITEM}}], "ClientRequestToken": "tok"},
        ),
    ],
)
def test_dynamodb_requests_with_nested_binary_values_are_botocores(operation: str, parameters: Any) -> None:
    expected, planned = _both(_operation("dynamodb", operation), parameters)

    assert planned == expected
    assert planned["body"] == expected["body"]


def test_recursive_values_are_converted_at_every_depth() -> None:
    _, planned = _both(_operation("dynamodb", "PutItem"), {"TableName": "t", "Item": ITEM})

    item = json.loads(planned["body"])["Item"]
    assert item["deep"]["M"]["list"]["L"][1]["M"]["b"]["B"] == "ZGVlcGVy"
    assert item["blobs"]["BS"] == ["YQ==", "Yg=="]


WHEN = datetime(2026, 12, 3, 12, 0, 0, 250000, tzinfo=UTC)


def _own(name: str = "Op") -> OperationModel:
    return own_model().operation_model(name)


@pytest.mark.parametrize(
    "parameters",
    [
        {
            "Ratio": Decimal("0.25"),
            "Renamed": "to the wire name",
            "When": WHEN,
            "Iso": WHEN,
            "Times": [WHEN, 1764763200, "2026-12-03T12:00:00Z"],
            "Choice": {"b": b"chosen"},
            "Tree": {"label": "root", "children": [{"label": "leaf", "data": b"d", "children": []}]},
            "Doc": {"anything": [1, {"goes": None}]},
        },
        {"Ratio": float("inf"), "Tree": MappingProxyType({"label": "a mapping, not a dict"})},
        {"Ratio": 1.5, "Times": (WHEN,), "Tree": {"label": None, "children": ()}},
    ],
)
def test_renamed_members_timestamps_floats_unions_and_documents_are_botocores(parameters: Any) -> None:
    for precision in ("default", "millisecond", "legacy"):
        botocores = JSONSerializer(timestamp_precision=precision)
        planned = PlannedJSONSerializer(timestamp_precision=precision)

        expected = botocores.serialize_to_request(parameters, _own())
        assert planned.serialize_to_request(parameters, _own()) == expected
    assert b'"wireName": "to the wire name"' in expected["body"] or "Renamed" not in parameters


def test_a_document_input_is_left_to_botocore() -> None:
    document = {"free": {"form": [1, None]}}

    expected = JSONSerializer().serialize_to_request(document, _own("Doc"))

    assert PlannedJSONSerializer().serialize_to_request(document, _own("Doc")) == expected


@pytest.mark.parametrize(
    ("operation", "parameters"),
    [
        (_operation("sqs", "DeleteMessageBatch"), {"QueueUrl": QUEUE, "Unknown": 1}),
        (
            _operation("sqs", "DeleteMessageBatch"),
            {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "Receipt": "r"}]},
        ),
        (_operation("sqs", "SendMessage"), {"MessageAttributes": {"a": {"Value": "v"}}}),
        (_own(), {"Tree": {"label": "x", "colour": "red"}}),
        (_own(), MappingProxyType({"Nope": 1})),
    ],
)
def test_a_key_the_shape_does_not_have_is_refused_as_botocore_refuses_it(
    operation: OperationModel, parameters: Any
) -> None:
    with pytest.raises(KeyError) as botocores:
        JSONSerializer().serialize_to_request(parameters, operation)
    with pytest.raises(KeyError) as planned:
        PlannedJSONSerializer().serialize_to_request(parameters, operation)

    assert planned.value.args == botocores.value.args


def test_threads_serializing_at_once_all_get_botocores_requests() -> None:
    operation = _operation("sqs", "SendMessageBatch")
    serializer = PlannedJSONSerializer()
    expected = JSONSerializer().serialize_to_request(SEND_BATCH, operation)
    requests = results_at_once(
        8, lambda: [serializer.serialize_to_request(SEND_BATCH, operation) for _ in range(20)]
    )

    assert len(requests) == 160
    assert all(request == expected for request in requests)


class _SentError(Exception):
    """Stops a request at the wire, carrying its body."""


def _sent_body(client: Any) -> bytes:
    def capture(request: Any, **_: Any) -> None:
        raise _SentError(request.body)

    client.meta.events.register("before-send.sqs.SendMessageBatch", capture)
    with pytest.raises(_SentError) as sent:
        client.send_message_batch(**SEND_BATCH)
    body: bytes = sent.value.args[0]
    return body


def test_clients_cloudjobs_builds_send_botocores_requests_through_the_planned_serializer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.config import Config

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    unchecked = Config(parameter_validation=False)
    ours = create_client("sqs", session=new_session(), region="us-east-1", config=unchecked)
    plain: Any = boto3.session.Session().client("sqs", region_name="us-east-1", config=unchecked)
    checked = create_client("sqs", session=new_session(), region="us-east-1")

    assert type(ours._serializer) is PlannedJSONSerializer
    assert type(plain._serializer) is JSONSerializer  # sessions cloudjobs did not make are left alone
    assert isinstance(checked._serializer, ParamValidationDecorator)  # validating clients too
    assert _sent_body(ours) == _sent_body(plain)


def test_a_serializer_without_the_attributes_expected_is_left_to_botocore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import botocore.serialize

    def without_precision(self: Any, timestamp_precision: str = "default") -> None:
        pass  # a botocore release that keeps its precision elsewhere

    monkeypatch.setattr(botocore.serialize.Serializer, "__init__", without_precision)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    from botocore.config import Config

    client: Any = create_client(
        "sqs", session=new_session(), region="us-east-1", config=Config(parameter_validation=False)
    )

    assert type(client._serializer) is JSONSerializer


def test_a_botocore_without_the_methods_the_plan_builds_on_keeps_its_serializer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cloudjobs.aws_json_requests

    monkeypatch.setattr(cloudjobs.aws_json_requests, "_PLANNABLE", False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    from botocore.config import Config

    client: Any = create_client(
        "sqs", session=new_session(), region="us-east-1", config=Config(parameter_validation=False)
    )

    assert type(client._serializer) is JSONSerializer


def test_this_botocore_has_the_methods_the_plan_builds_on() -> None:
    import cloudjobs.aws_json_requests

    assert cloudjobs.aws_json_requests._PLANNABLE is True
