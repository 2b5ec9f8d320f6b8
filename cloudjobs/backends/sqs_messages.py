"""Conversion between this package's values and boto3's SQS shapes: messages, attributes, durations.

Limits referred to below: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from cloudjobs.backends.base import (
    MAX_VISIBILITY,
    Delivery,
    OutgoingMessage,
    QueueInfo,
    TypedAttribute,
    build_delivery,
    read_attributes,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageSystemAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
        SendMessageRequestTypeDef,
    )

_SYSTEM_ATTRIBUTE_NAMES: Final = ("AWSTraceHeader",)


def queue_info_of(name: str, queue_url: str, attributes: Mapping[QueueAttributeNameType, str]) -> QueueInfo:
    """The :class:`QueueInfo` in a queue's attributes (GetQueueAttributes with ``All``)."""
    max_receive_count: int | None = None
    dead_letter_queue: str | None = None
    if redrive_policy := attributes.get("RedrivePolicy"):
        policy = json.loads(redrive_policy)
        # Servers differ: maxReceiveCount comes as a number or as a string.
        max_receive_count = int(policy["maxReceiveCount"])
        dead_letter_queue = str(policy["deadLetterTargetArn"]).rsplit(":", 1)[-1]
    return QueueInfo(
        name=name,
        url=queue_url,
        is_fifo=attributes.get("FifoQueue", "false").lower() == "true",
        max_message_size=int(attributes["MaximumMessageSize"]),
        visibility_timeout=timedelta(seconds=int(attributes["VisibilityTimeout"])),
        max_receive_count=max_receive_count,
        dead_letter_queue=dead_letter_queue,
        retention=timedelta(seconds=int(attributes["MessageRetentionPeriod"]))
        if "MessageRetentionPeriod" in attributes
        else None,
    )


def delivery_of(message: MessageTypeDef, queue: str) -> Delivery:
    """The :class:`Delivery` of a received message: ``String`` attributes as text, every other data
    type (and custom ``String.<label>`` types) also as a :class:`TypedAttribute`, unchanged."""
    system = message.get("Attributes", {})
    received = message.get("MessageAttributes", {})
    attributes: dict[str, str]
    typed: dict[str, TypedAttribute]
    try:
        # The usual case, cloudjobs' own messages: every attribute a plain String with its value.
        attributes = {
            name: value["StringValue"] for name, value in received.items() if value["DataType"] == "String"
        }
        typed = {}
    except KeyError:
        attributes = {}
    if len(attributes) != len(received):
        attributes, typed = read_attributes(
            (
                name,
                value["DataType"],
                bytes(value["BinaryValue"]) if "BinaryValue" in value else value.get("StringValue"),
            )
            for name, value in received.items()
        )
    return build_delivery(  # positional: keywords cost a quarter of the call
        message["MessageId"],  # message_id
        message["ReceiptHandle"],  # receipt
        message.get("Body", ""),  # body
        attributes,
        int(system.get("ApproximateReceiveCount", "1")),  # receive_count
        datetime.fromtimestamp(int(system.get("SentTimestamp", "0")) / 1000, UTC),  # sent_at (tz= costs more)
        queue,
        system.get("MessageGroupId"),  # group_id
        {name: system[name] for name in _SYSTEM_ATTRIBUTE_NAMES if name in system},  # system_attributes
        typed,  # typed_attributes
    )


def batch_entry(entry_id: str, message: OutgoingMessage) -> SendMessageBatchRequestEntryTypeDef:
    """One SendMessageBatch entry; a delay is rounded up to whole seconds."""
    entry: SendMessageBatchRequestEntryTypeDef = {"Id": entry_id, "MessageBody": message.body}
    if message.attributes or message.typed_attributes:
        entry["MessageAttributes"] = _message_attributes(message)
    if system_attributes := _system_attributes(message.system_attributes):
        entry["MessageSystemAttributes"] = system_attributes
    if message.delay:
        entry["DelaySeconds"] = math.ceil(message.delay.total_seconds())
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        entry["MessageDeduplicationId"] = message.deduplication_id
    return entry


def send_request(queue_url: str, message: OutgoingMessage) -> SendMessageRequestTypeDef:
    """One SendMessage request (its delay is not sent: only dead-letter copies go this way)."""
    request: SendMessageRequestTypeDef = {"QueueUrl": queue_url, "MessageBody": message.body}
    if message.attributes or message.typed_attributes:
        request["MessageAttributes"] = _message_attributes(message)
    if system_attributes := _system_attributes(message.system_attributes):
        request["MessageSystemAttributes"] = system_attributes
    if message.group_id is not None:
        request["MessageGroupId"] = message.group_id
    if message.deduplication_id is not None:
        request["MessageDeduplicationId"] = message.deduplication_id
    return request


def whole_seconds(duration: timedelta) -> int:
    """A visibility timeout in whole seconds, clamped to 0–43,200 s."""
    # Round up so a message is never visible earlier than asked.
    seconds = math.ceil(duration.total_seconds())
    return min(max(seconds, 0), int(MAX_VISIBILITY.total_seconds()))


def _message_attributes(message: OutgoingMessage) -> dict[str, MessageAttributeValueTypeDef]:
    shaped: dict[str, MessageAttributeValueTypeDef] = {
        name: {"DataType": "String", "StringValue": value} for name, value in message.attributes.items()
    }
    for name, attribute in message.typed_attributes.items():
        if isinstance(attribute.value, bytes):
            shaped[name] = {"DataType": attribute.data_type, "BinaryValue": attribute.value}
        else:
            shaped[name] = {"DataType": attribute.data_type, "StringValue": attribute.value}
    return shaped


def _system_attributes(
    attributes: Mapping[str, str],
) -> dict[Literal["AWSTraceHeader"], MessageSystemAttributeValueTypeDef]:
    # AWSTraceHeader is the only message system attribute SQS takes.
    trace_header = attributes.get("AWSTraceHeader")
    if trace_header is None:
        return {}
    return {"AWSTraceHeader": {"DataType": "String", "StringValue": trace_header}}
