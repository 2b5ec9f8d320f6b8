"""Job control on DynamoDB: pending records at enqueue, cancellation and cancellation markers.

:class:`DynamoDbJobControl` implements the :class:`~cloudjobs.idempotency.base.JobControlStore`
protocol for :class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore`, which holds one; it
is kept in its own module because it serves producers and operators, not the lease a consumer takes.
It writes the same items as the store (see :mod:`cloudjobs.idempotency.dynamodb_items`), by
conditional writes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.errors import IdempotencyStoreError
from cloudjobs.idempotency.base import (
    Cancellation,
    CancelOutcome,
    Claim,
    Record,
    Status,
    alias_key,
    cancel_marker_key,
)
from cloudjobs.idempotency.dynamodb_items import (
    IS_ABSENT,
    IS_EXPIRED,
    IS_LEASE_LAPSED,
    ConditionFailedError,
    expression_names,
    record_of,
    time_of,
    time_value,
    ttl_value,
    update_held,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_register import CancellationRegister
from cloudjobs.idempotency.dynamodb_schema import (
    TABLE_JOB_ID_ATTRIBUTE,
    TABLE_PARTITION_KEY,
    TABLE_TTL_ATTRIBUTE,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# Cancellation: a job not running (pending, failed, or its worker gone) is cancelled outright.
_IS_NOT_RUNNING: Final = f"#status IN (:pending, :retrying) OR {IS_LEASE_LAPSED}"
_IS_RUNNING: Final = "#status = :in_progress"
_BATCH_GET_KEYS: Final = 100
"""BatchGetItem's limit of keys per request."""


class DynamoDbJobControl:
    """Pending records, cancellation and markers on the idempotency table.

    :class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore` holds one and delegates its
    JobControlStore methods to it.

    Args:
        table: the table's name.
        client: gives the DynamoDB client (the store creates it on first use).
        clock_skew: how long after its expiry a lease (or a record) counts as lapsed.
        find: the live record of a job by its id (the store's Query on the job-id index).
        register: the cancellation register that lists the live markers (see
            :mod:`cloudjobs.idempotency.dynamodb_register`).
    """

    def __init__(
        self,
        table: str,
        *,
        client: Callable[[], DynamoDBClient],
        clock_skew: timedelta,
        find: Callable[[str], Record | None],
        register: CancellationRegister,
    ) -> None:
        self._table = table
        self._client = client
        self._clock_skew = clock_skew
        self._find = find
        self._register = register

    def put_pending(self, claim: Claim, *, retention: timedelta) -> bool:
        """Write a pending record with one conditional PutItem (never over a live record); True if
        written. See :meth:`~cloudjobs.idempotency.base.JobControlStore.put_pending`."""
        now = utc_now()
        item: dict[str, AttributeValueTypeDef] = {
            TABLE_PARTITION_KEY: {"S": claim.key},
            TABLE_JOB_ID_ATTRIBUTE: {"S": claim.job_id},
            "job_type": {"S": claim.job_type},
            "status": {"S": Status.PENDING.value},
            "payload_hash": {"S": claim.payload_hash},
            "attempts": {"N": "0"},
            "created_at": time_value(now),
            "updated_at": time_value(now),
            # A scheduled job's record lives its retention past its due time.
            TABLE_TTL_ATTRIBUTE: ttl_value(max(now, claim.due_at or now) + retention),
        }
        if claim.due_at is not None:
            item["due_at"] = time_value(claim.due_at)
        if claim.correlation_id:
            item["correlation_id"] = {"S": claim.correlation_id}
        if claim.trace_id:
            item["trace_id"] = {"S": claim.trace_id}
        try:
            with wrap_dynamodb_errors(self._table, claim.key):
                self._client().put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression=f"{IS_ABSENT} OR {IS_EXPIRED}",
                    ExpressionAttributeNames=expression_names("pk", "expires_at"),
                    ExpressionAttributeValues={":lapsed_before": time_value(now - self._clock_skew)},
                    # The refusal names the record's job at no extra cost: a duplicate gets an alias.
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as refused:
            held_by = refused.item.get(TABLE_JOB_ID_ATTRIBUTE, {}).get("S") if refused.item else None
            if held_by != claim.job_id:
                self._put_alias(claim.job_id, claim.key, now + retention)
            return False
        return True

    def find_through_alias(self, job_id: str) -> Record | None:
        """The record a duplicate was pointed at: a strongly consistent GetItem of the alias, and
        one of the record when there is an alias."""
        alias = self._get(alias_key(job_id))
        if alias is None or "target" not in alias:
            return None
        expires_at = time_of(alias.get(TABLE_TTL_ATTRIBUTE))
        target = alias["target"].get("S")
        if target is None or expires_at is None or expires_at < utc_now():
            return None
        item = self._get(target)
        if item is None:
            return None
        record = record_of(item)
        return record if record.expires_at >= utc_now() else None

    def _put_alias(self, job_id: str, key: str, expires_at: datetime) -> None:
        # No job-id attribute: the index (and so find) never sees an alias.
        with wrap_dynamodb_errors(self._table, alias_key(job_id)):
            self._client().put_item(
                TableName=self._table,
                Item={
                    TABLE_PARTITION_KEY: {"S": alias_key(job_id)},
                    "target": {"S": key},
                    TABLE_TTL_ATTRIBUTE: ttl_value(expires_at),
                },
            )

    def _get(self, key: str) -> Mapping[str, AttributeValueTypeDef] | None:
        with wrap_dynamodb_errors(self._table, key):
            response = self._client().get_item(
                TableName=self._table, Key={TABLE_PARTITION_KEY: {"S": key}}, ConsistentRead=True
            )
        return response.get("Item")

    def cancel(self, job_id: str, *, retention: timedelta) -> Cancellation:
        """Cancel a job: find its record (one Query), then one or two conditional UpdateItems; without
        a record, one PutItem of a marker, entered in the cancellation register (one GetItem and one
        UpdateItem), and a wait of the register's refresh interval (a second or so), after which no
        consumer checks a received batch against a read of the register older than the marker.
        See :class:`~cloudjobs.idempotency.base.CancelOutcome`."""
        record = self._find(job_id)
        if record is None:
            expires_at = utc_now() + retention
            self._put_marker(job_id, expires_at)
            self._register.add(job_id, expires_at)
            self._register.wait_out()
            return Cancellation(CancelOutcome.MARKED)
        # The index may lag: each write's condition decides on the record as it is, and a refused
        # write returns it, so the loop ends within a few turns whatever happens in between.
        for _ in range(3):
            if record.status in (Status.COMPLETED, Status.DEAD_LETTERED, Status.CANCELLED):
                return Cancellation(CancelOutcome.ALREADY_FINISHED, record)
            now = utc_now()
            try:
                cancelled = self._cancel_write(record.key, now, is_running=False)
                return Cancellation(CancelOutcome.CANCELLED, cancelled)
            except ConditionFailedError as failed:
                record = record_of(failed.item) if failed.item else record
            if record.status is not Status.IN_PROGRESS:
                continue
            try:
                requested = self._cancel_write(record.key, now, is_running=True)
                return Cancellation(CancelOutcome.REQUESTED, requested)
            except ConditionFailedError as failed:
                record = record_of(failed.item) if failed.item else record
        raise IdempotencyStoreError(
            "the record kept changing while it was cancelled; try again", key=record.key
        )

    def is_marked_cancelled(self, job_id: str) -> bool:
        """True when a live cancellation marker exists: one strongly consistent GetItem."""
        return self.cancel_marker_expiry(job_id) is not None

    def cancel_marker_expiry(self, job_id: str) -> datetime | None:
        """When the live cancellation marker expires, or None: one strongly consistent GetItem."""
        key = cancel_marker_key(job_id)
        with wrap_dynamodb_errors(self._table, key):
            response = self._client().get_item(
                TableName=self._table,
                Key={TABLE_PARTITION_KEY: {"S": key}},
                ConsistentRead=True,
                ProjectionExpression="#expires_at",
                ExpressionAttributeNames=expression_names("expires_at"),
            )
        expires_at = time_of(response.get("Item", {}).get(TABLE_TTL_ATTRIBUTE))
        return expires_at if expires_at is not None and expires_at >= utc_now() else None

    def marked_cancelled(self, job_ids: Collection[str]) -> set[str]:
        """The ids with a live marker, as the cancellation register lists them: no request when this
        process read it less than a refresh interval ago, else one strongly consistent GetItem.

        While the register is incomplete (over its size), the markers themselves: one strongly
        consistent BatchGetItem per hundred ids (keys DynamoDB leaves unprocessed are asked again,
        twice at most, then counted as unmarked: cancellation without a record is best effort)."""
        listed = self._register.marked(job_ids)
        if listed is not None:
            return listed
        marked: set[str] = set()
        unique = list(dict.fromkeys(job_ids))
        now = utc_now()
        for start in range(0, len(unique), _BATCH_GET_KEYS):
            by_key = {cancel_marker_key(job_id): job_id for job_id in unique[start : start + _BATCH_GET_KEYS]}
            keys: list[Mapping[str, AttributeValueTypeDef]] = [
                {TABLE_PARTITION_KEY: {"S": key}} for key in by_key
            ]
            for _ in range(3):
                if not keys:
                    break
                with wrap_dynamodb_errors(self._table, "#cancelled#*"):
                    response = self._client().batch_get_item(
                        RequestItems={
                            self._table: {
                                "Keys": keys,
                                "ConsistentRead": True,
                                "ProjectionExpression": "#pk, #expires_at",
                                "ExpressionAttributeNames": expression_names("pk", "expires_at"),
                            }
                        }
                    )
                for item in response.get("Responses", {}).get(self._table, []):
                    expires_at = time_of(item.get(TABLE_TTL_ATTRIBUTE))
                    key = item[TABLE_PARTITION_KEY].get("S", "")
                    if expires_at is not None and expires_at >= now and key in by_key:
                        marked.add(by_key[key])
                unprocessed = response.get("UnprocessedKeys", {})
                keys = list(unprocessed[self._table]["Keys"]) if self._table in unprocessed else []
        return marked

    def finish_cancelled(self, key: str, token: str) -> None:
        """Settle a held lease as cancelled with one conditional UpdateItem."""
        update = (
            "SET #status = :cancelled, #cancel_requested_at = if_not_exists(#cancel_requested_at, :now), "
            "#updated_at = :now REMOVE #token, #lease_expires_at"
        )
        values: dict[str, AttributeValueTypeDef] = {
            ":cancelled": {"S": Status.CANCELLED.value},
            ":now": time_value(utc_now()),
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        names = ["status", "cancel_requested_at", "updated_at", "token", "lease_expires_at"]
        update_held(self._client(), self._table, key, update, names, values)

    def _cancel_write(self, key: str, now: datetime, *, is_running: bool) -> Record:
        """Cancel a record not running (status cancelled), or ask a running one to stop."""
        if is_running:
            update = (
                "SET #cancel_requested_at = if_not_exists(#cancel_requested_at, :now), #updated_at = :now"
            )
            names = ["cancel_requested_at", "updated_at", "status"]
            condition = _IS_RUNNING
            values: dict[str, AttributeValueTypeDef] = {":in_progress": {"S": Status.IN_PROGRESS.value}}
        else:
            update = "SET #status = :cancelled, #updated_at = :now REMOVE #token, #lease_expires_at"
            names = ["status", "updated_at", "token", "lease_expires_at"]
            condition = _IS_NOT_RUNNING
            values = {
                ":cancelled": {"S": Status.CANCELLED.value},
                ":pending": {"S": Status.PENDING.value},
                ":retrying": {"S": Status.RETRYING.value},
                ":in_progress": {"S": Status.IN_PROGRESS.value},
                ":lapsed_before": time_value(now - self._clock_skew),
            }
        values[":now"] = time_value(now)
        with wrap_dynamodb_errors(self._table, key):
            response = self._client().update_item(
                TableName=self._table,
                Key={TABLE_PARTITION_KEY: {"S": key}},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(#pk) AND ({condition})",
                ExpressionAttributeNames=expression_names("pk", *names),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        return record_of(response["Attributes"])

    def _put_marker(self, job_id: str, expires_at: datetime) -> None:
        key = cancel_marker_key(job_id)
        try:
            with wrap_dynamodb_errors(self._table, key):
                self._client().put_item(
                    TableName=self._table,
                    Item={
                        TABLE_PARTITION_KEY: {"S": key},
                        TABLE_TTL_ATTRIBUTE: ttl_value(expires_at),
                    },
                    ConditionExpression=IS_ABSENT,
                    ExpressionAttributeNames=expression_names("pk"),
                )
        except ConditionFailedError:
            pass  # marked already: cancelling twice changes nothing
