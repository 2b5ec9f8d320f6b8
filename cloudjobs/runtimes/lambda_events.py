"""The shapes Lambda's SQS event source mapping sends and expects, as TypedDicts, and records → deliveries.

Field names are AWS's own (camelCase in records, PascalCase in ``attributes``), so an event can be
typed as it arrives. See
https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html (event shape) and
https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html (partial batch response).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NotRequired, Protocol, TypedDict

from cloudjobs.backends.base import Delivery, TypedAttribute, build_delivery, read_attributes


class SqsMessageAttribute(TypedDict):
    """One message attribute of a record; ``String`` and ``Number`` types carry ``stringValue``."""

    dataType: str
    stringValue: NotRequired[str]
    binaryValue: NotRequired[str]
    stringListValues: NotRequired[list[str]]
    binaryListValues: NotRequired[list[str]]


class SqsRecordAttributes(TypedDict):
    """A record's system attributes: numbers as strings, ``SentTimestamp`` in epoch milliseconds;
    ``MessageGroupId``, ``MessageDeduplicationId`` and ``SequenceNumber`` on FIFO queues only."""

    ApproximateReceiveCount: str
    SentTimestamp: str
    SenderId: NotRequired[str]
    ApproximateFirstReceiveTimestamp: NotRequired[str]
    AWSTraceHeader: NotRequired[str]
    MessageGroupId: NotRequired[str]
    MessageDeduplicationId: NotRequired[str]
    SequenceNumber: NotRequired[str]
    DeadLetterQueueSourceArn: NotRequired[str]


class SqsRecord(TypedDict):
    """One SQS message as the event source mapping hands it over."""

    messageId: str
    receiptHandle: str
    body: str
    attributes: SqsRecordAttributes
    messageAttributes: dict[str, SqsMessageAttribute]
    md5OfBody: str
    md5OfMessageAttributes: NotRequired[str | None]
    eventSource: str
    eventSourceARN: str
    awsRegion: str


class SqsEvent(TypedDict):
    """An SQS event: up to 10 records on FIFO queues, up to 10,000 on standard queues."""

    Records: list[SqsRecord]


class BatchItemFailure(TypedDict):
    """One record to leave on the queue: ``itemIdentifier`` is its ``messageId``."""

    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    """What a function with ``ReportBatchItemFailures`` returns; an empty list deletes every record."""

    batchItemFailures: list[BatchItemFailure]


class LambdaContext(Protocol):
    """The part of Lambda's context object the handler reads."""

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout ends the invocation."""
        ...


def queue_name_of(event_source_arn: str) -> str:
    """The queue's name from a record's ``eventSourceARN`` (``arn:aws:sqs:<region>:<account>:<name>``)."""
    # Only the name: account ids differ between AWS and local servers.
    return event_source_arn.rsplit(":", 1)[-1]


def delivery_from_record(record: SqsRecord, queue: str | None = None) -> Delivery:
    """A record as the consumer core takes it, attributes read as the SQS backend reads them.

    Args:
        record: the record.
        queue: the queue's name, when the caller already read it from the record's
            ``eventSourceARN`` (every record of a batch's group shares it).
    """
    system = record["attributes"]
    message_attributes = record.get("messageAttributes")
    attributes: dict[str, str] = {}
    typed: dict[str, TypedAttribute] = {}
    if message_attributes:
        # Plain Strings with a text value (cloudjobs' own attributes, trace context: the common case)
        # are read as read_attributes() reads them, without building its entries; at the first
        # other one, read_attributes() reads them all (and raises what it raises first: a value that
        # is no mapping, or has no dataType, fails here in the same order).
        for name, value in message_attributes.items():
            if (
                value["dataType"] != "String"
                or "binaryValue" in value
                or type(text := value.get("stringValue")) is not str
            ):
                attributes, typed = record_attributes(message_attributes)
                break
            attributes[name] = text
    system_attributes = {"AWSTraceHeader": system["AWSTraceHeader"]} if "AWSTraceHeader" in system else {}
    return build_delivery(  # positional: keywords cost a quarter of the call
        record["messageId"],  # message_id
        record["receiptHandle"],  # receipt
        record["body"],
        attributes,
        int(system.get("ApproximateReceiveCount", "1")),  # receive_count
        datetime.fromtimestamp(int(system.get("SentTimestamp", "0")) / 1000, UTC),  # sent_at
        queue_name_of(record["eventSourceARN"]) if queue is None else queue,
        system.get("MessageGroupId"),  # group_id
        system_attributes,
        typed,  # typed_attributes
    )


def record_attributes(
    message_attributes: Mapping[str, SqsMessageAttribute],
) -> tuple[dict[str, str], dict[str, TypedAttribute]]:
    """A record's attributes through :func:`read_attributes`, the general reader (Lambda hands binary
    values over base64-encoded)."""
    return read_attributes(
        [
            (
                name,
                value["dataType"],
                base64.b64decode(value["binaryValue"])
                if "binaryValue" in value
                else value.get("stringValue"),
            )
            for name, value in message_attributes.items()
        ]
    )
