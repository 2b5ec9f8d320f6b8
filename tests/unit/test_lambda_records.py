"""Records → deliveries: the reader's shortcut for plain ``String`` attributes reads every record as
the general reader does (the reference below reads every attribute through it)."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from cloudjobs.backends.base import Delivery
from cloudjobs.runtimes.lambda_events import SqsRecord, delivery_from_record, record_attributes

EVENTS = sorted((Path(__file__).parent.parent / "events").glob("*.json"))


def reference(record: Any) -> Delivery:
    """``delivery_from_record`` without the plain-String shortcut: every attribute through the general
    reader, ``record_attributes``."""
    message_attributes = record.get("messageAttributes")
    attributes, typed = record_attributes(message_attributes) if message_attributes else ({}, {})
    without_attributes = cast("SqsRecord", {**record, "messageAttributes": {}})
    return dataclasses.replace(
        delivery_from_record(without_attributes),
        attributes=attributes,
        typed_attributes=typed,
    )


def _record(message_attributes: object) -> dict[str, Any]:
    return {
        "messageId": "m",
        "receiptHandle": "r",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000123"},
        "messageAttributes": message_attributes,
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:jobs",
        "awsRegion": "eu-west-1",
    }


def _string(value: object) -> dict[str, object]:
    return {"dataType": "String", "stringValue": value}


ATTRIBUTE_SETS: dict[str, object] = {
    "none": None,
    "empty": {},
    "plain strings": {
        "cloudjobs.type": _string("t"),
        "cloudjobs.id": _string("i"),
        "traceparent": _string("x"),
    },
    "empty string value": {"a": _string("")},
    "no value": {"a": {"dataType": "String"}},
    "null value": {"a": _string(None)},
    "number as a string value": {"a": _string(5)},
    "plain then typed": {"a": _string("p"), "n": {"dataType": "Number", "stringValue": "4"}},
    "typed then plain": {"n": {"dataType": "Number", "stringValue": "4"}, "a": _string("p")},
    "a type that only starts like String": {
        "a": _string("p"),
        "s": {"dataType": "Stringy", "stringValue": "s"},
    },
    "labelled string": {"a": _string("p"), "r": {"dataType": "String.region", "stringValue": "eu"}},
    "binary": {
        "a": _string("p"),
        "b": {"dataType": "Binary", "binaryValue": base64.b64encode(b"\0").decode()},
    },
    "string with a binary value": {
        "a": {"dataType": "String", "binaryValue": base64.b64encode(b"z").decode()}
    },
    "string with both values": {
        "a": {"dataType": "String", "stringValue": "s", "binaryValue": base64.b64encode(b"z").decode()}
    },
    "list fields beside the value": {
        "a": {"dataType": "String", "stringValue": "s", "stringListValues": [], "binaryListValues": []}
    },
}

MALFORMED: dict[str, object] = {
    "a bare string": {"a": "text"},
    "null attribute": {"a": None},
    "no data type": {"a": {"stringValue": "s"}},
    "no data type after a plain one": {"a": _string("p"), "b": {"stringValue": "s"}},
    "bad base64 before a bad attribute": {
        "b": {"dataType": "Binary", "binaryValue": "base64Str"},
        "c": "text",
    },
    "not a map": ["a"],
}


def _sample_records() -> Iterator[Any]:
    for path in EVENTS:
        yield from json.loads(path.read_text())["Records"]


@pytest.mark.parametrize("name", ATTRIBUTE_SETS)
def test_a_record_reads_as_the_general_reader_reads_it(name: str) -> None:
    record = _record(copy.deepcopy(ATTRIBUTE_SETS[name]))

    delivery = delivery_from_record(record)  # type: ignore[arg-type]

    expected = reference(record)
    assert delivery == expected
    assert list(delivery.attributes) == list(expected.attributes)  # the same order
    assert list(delivery.typed_attributes) == list(expected.typed_attributes)


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_record_raises_what_the_general_reader_raises(name: str) -> None:
    record = _record(copy.deepcopy(MALFORMED[name]))

    expected = _raised(lambda: reference(record))
    raised = _raised(lambda: delivery_from_record(record))  # type: ignore[arg-type]

    assert type(raised) is type(expected)
    assert str(raised) == str(expected)


def _raised(read: Callable[[], object]) -> Exception:
    try:
        read()
    except Exception as exc:
        return exc
    raise AssertionError("the record was read")


def test_every_sample_event_record_reads_as_the_general_reader_reads_it() -> None:
    compared = 0
    for record in _sample_records():
        try:
            expected: Delivery | BaseException = reference(record)
        except Exception as exc:
            expected = exc
        if isinstance(expected, BaseException):
            with pytest.raises(type(expected)):
                delivery_from_record(record)
            continue
        sqs_record: SqsRecord = record
        assert delivery_from_record(sqs_record) == expected
        compared += 1
    assert compared >= 5
