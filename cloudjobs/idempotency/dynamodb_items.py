"""The DynamoDB idempotency table's item shape: attribute names, values, shared conditions and writes,
errors.

Shared by :mod:`cloudjobs.idempotency.dynamodb` (the lease) and
:mod:`cloudjobs.idempotency.dynamodb_control` (pending records and cancellation), so both read and
write records alike. Every time in an item is in epoch seconds (lease times with a fraction), by the
writer's clock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import botocore.exceptions

from cloudjobs.aws_errors import setup_error, setup_errors
from cloudjobs.errors import IdempotencyStoreError, LeaseLostError
from cloudjobs.idempotency.base import ChildCounts, Record, Status
from cloudjobs.idempotency.dynamodb_schema import (
    TABLE_JOB_ID_ATTRIBUTE,
    TABLE_PARTITION_KEY,
    TABLE_TTL_ATTRIBUTE,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_CONDITION_FAILED: Final = "ConditionalCheckFailedException"
_NOT_FOUND: Final = "ResourceNotFoundException"

ATTRIBUTE_NAMES: Final = {
    "pk": TABLE_PARTITION_KEY,
    "job_id": TABLE_JOB_ID_ATTRIBUTE,
    "expires_at": TABLE_TTL_ATTRIBUTE,
    "job_type": "job_type",
    "status": "status",
    "payload_hash": "payload_hash",
    "token": "lease_token",
    "lease_expires_at": "lease_expires_at",
    "attempts": "attempts",
    "created_at": "created_at",
    "updated_at": "updated_at",
    "progress": "progress",
    "result": "result",
    "result_omitted": "result_omitted",
    "error": "error",
    "cancel_requested_at": "cancel_requested_at",
    "due_at": "due_at",
    "correlation_id": "correlation_id",
    "trace_id": "trace_id",
}
"""Attribute names; every expression refers to them through "#name" placeholders, as several
(status, error, result, ...) are DynamoDB reserved words."""

# A record older than its retention counts as absent; a lease counts as lapsed only clock_skew after
# its end by the holder's clock, so a writer whose clock runs ahead cannot take over a live lease.
IS_ABSENT: Final = "attribute_not_exists(#pk)"
IS_EXPIRED: Final = "#expires_at < :lapsed_before"
IS_LEASE_LAPSED: Final = "(#status = :in_progress AND #lease_expires_at < :lapsed_before)"
IS_HELD: Final = "#token = :token AND #status = :in_progress"


class ConditionFailedError(Exception):
    """A conditional write's condition was false; ``item`` is the record as it was (ALL_OLD)."""

    def __init__(self, item: Mapping[str, AttributeValueTypeDef] | None) -> None:
        super().__init__("conditional check failed")
        self.item = item


@contextmanager
def wrap_dynamodb_errors(table: str, key: str | None) -> Iterator[None]:
    """Translate botocore errors into cloudjobs errors (a failed condition into ConditionFailedError).

    Raises:
        CredentialsError, ConfigurationError: the caller's AWS setup is wrong.
        ConditionFailedError: a conditional write's condition was false.
        IdempotencyStoreError: anything else, with the table, the key and the service's ``code``.
    """
    try:
        yield
    except setup_errors() as exc:
        raise setup_error(exc) from exc
    except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
        raise IdempotencyStoreError(f"DynamoDB endpoint unreachable: {exc}", key=key, table=table) from exc
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code == _CONDITION_FAILED:
            item: Mapping[str, AttributeValueTypeDef] | None = exc.response.get("Item")  # type: ignore[assignment]
            raise ConditionFailedError(item) from None
        message = f"table {table!r} does not exist" if code == _NOT_FOUND else str(exc)
        raise IdempotencyStoreError(message, key=key, table=table, code=code or None) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise IdempotencyStoreError(str(exc), key=key, table=table) from exc


def update_held(
    client: DynamoDBClient,
    table: str,
    key: str,
    update: str,
    names: list[str],
    values: dict[str, AttributeValueTypeDef],
    *,
    return_new: bool = False,
) -> Mapping[str, AttributeValueTypeDef]:
    """One UpdateItem on a record whose lease ``values[":token"]`` holds; the record as updated when
    ``return_new`` (else empty).

    ``names`` and ``values`` are exactly those ``update`` uses, plus ``token`` and ``status`` and
    ``:token`` and ``:in_progress`` for the held condition.

    Raises:
        LeaseLostError: the token no longer holds the record.
        IdempotencyStoreError: the table refused the write.
    """
    try:
        with wrap_dynamodb_errors(table, key):
            response = client.update_item(
                TableName=table,
                Key={TABLE_PARTITION_KEY: {"S": key}},
                UpdateExpression=update,
                ConditionExpression=IS_HELD,
                ExpressionAttributeNames=expression_names(*names),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW" if return_new else "NONE",
            )
    except ConditionFailedError:
        raise LeaseLostError(f"the lease on {key!r} is no longer held by this token", key=key) from None
    return response.get("Attributes", {})


def expression_names(*names: str) -> dict[str, str]:
    """``ExpressionAttributeNames`` for exactly these names (DynamoDB Local rejects unused ones)."""
    return {f"#{name}": ATTRIBUTE_NAMES[name] for name in names}


def utc_now() -> datetime:
    """The writer's clock."""
    return datetime.now(UTC)


def time_value(moment: datetime) -> AttributeValueTypeDef:
    """A time as epoch seconds with milliseconds as a decimal fraction: one unit in every record."""
    return {"N": f"{moment.timestamp():.3f}"}


def ttl_value(moment: datetime) -> AttributeValueTypeDef:
    """A time as whole epoch seconds, which DynamoDB TTL reads."""
    return {"N": str(int(moment.timestamp()))}


def time_of(value: AttributeValueTypeDef | None) -> datetime | None:
    """The time in a number attribute, or None when it is missing."""
    if value is None or "N" not in value:
        return None
    return datetime.fromtimestamp(float(Decimal(value["N"])), tz=UTC)


def record_of(item: Mapping[str, AttributeValueTypeDef]) -> Record:
    """A table item as a Record.

    Raises:
        IdempotencyStoreError: the item has no known status.
    """
    epoch = datetime.fromtimestamp(0, tz=UTC)
    progress = item.get("progress")
    return Record(
        key=_text(item, "pk") or "",
        job_id=_text(item, "job_id") or "",
        job_type=_text(item, "job_type") or "",
        status=_status(item),
        payload_hash=_text(item, "payload_hash") or "",
        attempts=int(item.get("attempts", {}).get("N", "0")),
        created_at=time_of(item.get("created_at")) or epoch,
        updated_at=time_of(item.get("updated_at")) or epoch,
        expires_at=time_of(item.get(TABLE_TTL_ATTRIBUTE)) or epoch,
        lease_expires_at=time_of(item.get("lease_expires_at")),
        progress=int(progress["N"]) if progress is not None and "N" in progress else None,
        result=_text(item, "result"),
        result_omitted=_text(item, "result_omitted"),
        error=_text(item, "error"),
        cancel_requested_at=time_of(item.get("cancel_requested_at")),
        due_at=time_of(item.get("due_at")),
        correlation_id=_text(item, "correlation_id") or None,
        trace_id=_text(item, "trace_id") or None,
        children=_children(item),
    )


def _children(item: Mapping[str, AttributeValueTypeDef]) -> ChildCounts | None:
    """A flow parent's counts (the attributes :mod:`cloudjobs.flows.dynamodb` writes), or None."""
    total = item.get("flow_total")
    if total is None or "N" not in total:
        return None
    done = int(item.get("flow_done", {}).get("N", "0"))
    failed = int(item.get("flow_failed_count", {}).get("N", "0"))
    children = tuple(item.get("flow_children", {}).get("M", {}))
    return ChildCounts(total=int(total["N"]), succeeded=done - failed, failed=failed, child_ids=children)


def _text(item: Mapping[str, AttributeValueTypeDef], name: str) -> str | None:
    value = item.get(ATTRIBUTE_NAMES[name])
    return value.get("S") if value is not None else None


def _status(item: Mapping[str, AttributeValueTypeDef]) -> Status:
    """The record's status; a record without a known one is refused, never guessed."""
    text = _text(item, "status")
    try:
        return Status(text)
    except ValueError:
        raise IdempotencyStoreError(
            f"record has no known status ({text!r}): not written by this version of cloudjobs, or "
            "written partially",
            key=_text(item, "pk"),
        ) from None
