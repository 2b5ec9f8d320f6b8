"""The planned JSON parser gives botocore's answers, value for value, for less work."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.model import Shape
from botocore.parsers import JSONParser, QueryParser, ResponseParserError, create_parser
from botocore.session import get_session

from cloudjobs.aws_clients import create_client, new_session
from cloudjobs.aws_json import PlannedJSONParser, PlannedParserFactory
from tests.unit.at_once import results_at_once
from tests.unit.own_json_model import own_model


def _response(body: Any, status: int = 200) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {
        "status_code": status,
        "headers": {"x-amzn-requestid": "req-1", "content-type": "application/x-amz-json-1.0"},
        "body": raw,
        "context": {},
    }


def _output(service: str, operation: str) -> Shape:
    shape = get_session().get_service_model(service).operation_model(operation).output_shape
    assert shape is not None
    return shape


def _both(shape: Shape, body: Any, status: int = 200) -> tuple[Any, Any]:
    planned = PlannedParserFactory().create_parser("json")
    return create_parser("json").parse(_response(body, status), shape), planned.parse(
        _response(body, status), shape
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


RECEIVE = {
    "Messages": [
        {
            "MessageId": "m-1",
            "ReceiptHandle": "r-1",
            "MD5OfBody": "0" * 32,
            "Body": '{"cloudjobs": 1, "type": "send_welcome_email"}',
            "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1764763200000"},
            "MD5OfMessageAttributes": "1" * 32,
            "MessageAttributes": {
                "cloudjobs.type": {"StringValue": "send_welcome_email", "DataType": "String"},
                "raw": {"BinaryValue": _b64(b"\x00\xffbytes"), "DataType": "Binary"},
                "lists": {
                    "StringListValues": ["a", None, "b"],
                    "BinaryListValues": [_b64(b"x"), _b64(b"")],
                    "DataType": "String",
                },
                "nulls": {"StringValue": None, "DataType": "Number.int"},
            },
            "AFieldThisModelDoesNotHave": {"nested": True},
        },
        {"MessageId": "m-2", "ReceiptHandle": "r-2", "Body": "not json", "MessageAttributes": {}},
    ],
    "Unmodelled": 1,
}


def test_an_sqs_receive_with_every_kind_of_attribute_parses_as_botocore_parses_it() -> None:
    expected, planned = _both(_output("sqs", "ReceiveMessage"), RECEIVE)

    assert planned == expected
    attributes = planned["Messages"][0]["MessageAttributes"]
    assert attributes["raw"]["BinaryValue"] == b"\x00\xffbytes"
    assert attributes["lists"]["BinaryListValues"] == [b"x", b""]
    assert attributes["nulls"] == {"DataType": "Number.int"}  # absent members are left out
    assert "AFieldThisModelDoesNotHave" not in planned["Messages"][0]
    assert "Unmodelled" not in planned
    assert planned["ResponseMetadata"]["RequestId"] == "req-1"


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("ReceiveMessage", {}),
        ("ReceiveMessage", b""),
        (
            "SendMessageBatch",
            {
                "Successful": [{"Id": "0", "MessageId": "m", "MD5OfMessageBody": "x", "SequenceNumber": "1"}],
                "Failed": [
                    {"Id": "1", "SenderFault": True, "Code": "InvalidParameterValue", "Message": None}
                ],
            },
        ),
        ("DeleteMessageBatch", {"Successful": [{"Id": "0"}, {"Id": "1", "NotModelled": "x"}], "Failed": []}),
        ("GetQueueAttributes", {"Attributes": {"VisibilityTimeout": "30", "RedrivePolicy": "{}"}}),
        ("ListQueues", {"QueueUrls": ["http://q/1", "http://q/2"], "NextToken": "t"}),
    ],
)
def test_other_sqs_answers_parse_as_botocore_parses_them(operation: str, body: Any) -> None:
    expected, planned = _both(_output("sqs", operation), body)

    assert planned == expected


ITEM = {
    "pk": {"S": "job#1"},
    "n": {"N": "12.5"},
    "blob": {"B": _b64(b"\x01\x02")},
    "blobs": {"BS": [_b64(b"a"), _b64(b"b")]},
    "numbers": {"NS": ["1", "2"]},
    "nothing": {"NULL": True},
    "flag": {"BOOL": False},
    "deep": {"M": {"list": {"L": [{"S": "x"}, {"M": {"b": {"B": _b64(b"deeper")}}}, {"L": []}]}}},
}


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("GetItem", {"Item": ITEM, "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5}}),
        ("UpdateItem", {"Attributes": ITEM}),
        ("Query", {"Items": [ITEM, {"pk": {"S": "2"}}], "Count": 2, "LastEvaluatedKey": {"pk": {"S": "2"}}}),
        ("BatchGetItem", {"Responses": {"t": [ITEM]}, "UnprocessedKeys": {}}),
        (
            "DescribeTable",
            {"Table": {"TableName": "t", "CreationDateTime": 1764763200.123, "TableStatus": "ACTIVE"}},
        ),
    ],
)
def test_dynamodb_answers_with_nested_and_binary_values_parse_as_botocore_parses_them(
    operation: str, body: Any
) -> None:
    expected, planned = _both(_output("dynamodb", operation), body)

    assert planned == expected


def test_recursive_values_are_converted_at_every_depth() -> None:
    _, planned = _both(_output("dynamodb", "GetItem"), {"Item": ITEM})

    deep = planned["Item"]["deep"]["M"]["list"]["L"]
    assert deep[1]["M"]["b"]["B"] == b"deeper"
    assert planned["Item"]["blobs"]["BS"] == [b"a", b"b"]
    assert isinstance(
        _both(_output("dynamodb", "DescribeTable"), {"Table": {"CreationDateTime": 1.5}})[1]["Table"][
            "CreationDateTime"
        ],
        datetime,
    )


def test_error_answers_are_parsed_by_botocore_as_before() -> None:
    error = {
        "__type": "com.amazonaws.sqs#QueueDoesNotExist",
        "message": "The specified queue does not exist.",
    }

    expected, planned = _both(_output("sqs", "ReceiveMessage"), error, status=400)

    assert planned == expected
    assert planned["Error"]["Code"] == "QueueDoesNotExist"


def _own_output() -> Shape:
    shape = own_model().operation_model("Op").output_shape
    assert shape is not None
    return shape


@pytest.mark.parametrize(
    "body",
    [
        {
            "wireName": "from the wire",
            "Renamed": "ignored: not the wire name",
            "Choice": {"b": _b64(b"chosen")},
            "Times": [1.5, None, 1764763200],
            "Tree": {"label": "root", "children": [{"label": "leaf", "data": _b64(b"d"), "children": []}]},
            "Doc": {"anything": [1, {"goes": None}]},
        },
        {"Choice": {"zzz": "a member this model does not know"}},
    ],
)
def test_renamed_members_unions_documents_and_recursion_parse_as_botocore_parses_them(body: Any) -> None:
    shape = _own_output()
    planned_parser = PlannedParserFactory().create_parser("json")

    expected = create_parser("json").parse(_response(body), shape)
    planned = planned_parser.parse(_response(body), shape)

    assert planned == expected


def test_a_malformed_union_is_refused_as_botocore_refuses_it() -> None:
    body = {"Choice": {"a": "one", "b": _b64(b"two")}}

    with pytest.raises(ResponseParserError):
        create_parser("json").parse(_response(body), _own_output())
    with pytest.raises(ResponseParserError):
        PlannedParserFactory().create_parser("json").parse(_response(body), _own_output())


def test_the_factory_keeps_one_json_parser_and_leaves_other_protocols_to_botocore() -> None:
    factory = PlannedParserFactory()

    first = factory.create_parser("json")
    assert isinstance(first, PlannedJSONParser)
    assert factory.create_parser("json") is first
    assert type(factory.create_parser("query")) is QueryParser

    stamps: list[Any] = []

    def parse_timestamp(value: Any) -> str:
        stamps.append(value)
        return "parsed"

    factory.set_parser_defaults(timestamp_parser=parse_timestamp)
    second = factory.create_parser("json")
    assert second is not first
    parsed = second.parse(_response({"Times": [7]}), _own_output())
    assert parsed["Times"] == ["parsed"]
    assert stamps == [7]


def test_threads_parsing_at_once_all_get_botocore_answers() -> None:
    shape = _output("sqs", "ReceiveMessage")
    parser = PlannedParserFactory().create_parser("json")
    expected = JSONParser().parse(_response(RECEIVE), shape)
    answers = results_at_once(8, lambda: [parser.parse(_response(RECEIVE), shape) for _ in range(20)])

    assert len(answers) == 160
    assert all(answer == expected for answer in answers)


class _Raw:
    """What botocore reads an HTTP response's body from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def test_clients_cloudjobs_builds_parse_through_the_planned_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed_by: list[type] = []
    original = PlannedJSONParser._handle_json_body

    def spy(self: PlannedJSONParser, raw_body: Any, shape: Shape) -> Any:
        parsed_by.append(type(self))
        return original(self, raw_body, shape)

    monkeypatch.setattr(PlannedJSONParser, "_handle_json_body", spy)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    client = create_client("sqs", session=new_session(), region="us-east-1")
    body = json.dumps(RECEIVE).encode()

    def answer(request: Any, **_: Any) -> AWSResponse:
        headers = HTTPHeaders()
        headers["x-amzn-RequestId"] = "req-1"
        return AWSResponse(request.url, 200, headers, _Raw(body))

    client.meta.events.register("before-send.sqs.ReceiveMessage", answer)
    received = client.receive_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/1/q")

    assert parsed_by == [PlannedJSONParser]
    assert received["Messages"][0]["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\xffbytes"
    expected = JSONParser().parse(_response(RECEIVE), _output("sqs", "ReceiveMessage"))
    assert received["Messages"] == expected["Messages"]


def test_a_botocore_without_the_methods_the_plan_builds_on_gets_its_own_parsers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cloudjobs.aws_json

    monkeypatch.setattr(cloudjobs.aws_json, "_PLANNABLE", False)

    assert type(PlannedParserFactory().create_parser("json")) is JSONParser


def test_this_botocore_has_the_methods_the_plan_builds_on() -> None:
    import cloudjobs.aws_json

    assert cloudjobs.aws_json._PLANNABLE is True
