"""DynamoDbIdempotencyStore: idempotency and status records in a DynamoDB table, by conditional writes.

The table is the one :func:`cloudjobs.provisioning.provision_table` and the Terraform module create:
partition key ``pk`` (S), a global secondary index ``job_id-index`` on ``job_id`` (S), TTL on
``expires_at`` (epoch seconds). Every time in a record is in epoch seconds (lease times with a
fraction), by the writer's clock.

Request economy: :meth:`~DynamoDbIdempotencyStore.acquire` is one UpdateItem whatever the record's
state: on a failed condition DynamoDB returns the old item inside the error
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so a duplicate costs one write and no read.
UpdateItem rather than PutItem: taking over a lapsed lease keeps the record's attempts, progress,
error and creation time, which a PutItem would replace. No transactions (they cost twice).

Expiry is never left to TTL (its deletions are lazy): every condition and read compares
``expires_at`` itself. DynamoDB Local rejects an expression placeholder that is defined but unused,
so each request defines exactly the names and values its expressions use.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import boto3
import botocore.exceptions
from botocore.config import Config

from cloudjobs.aws_clients import create_client
from cloudjobs.aws_errors import setup_error, setup_errors
from cloudjobs.errors import IdempotencyStoreError, LeaseLostError
from cloudjobs.idempotency.base import (
    DEFAULT_CLOCK_SKEW,
    Acquired,
    AcquireResult,
    AlreadyCancelled,
    AlreadyCompleted,
    Cancellation,
    CancelOutcome,
    Claim,
    InProgress,
    PayloadMismatch,
    Record,
    Renewal,
    Status,
    cancel_marker_key,
    lapse_after,
)
from cloudjobs.provisioning import (
    TABLE_JOB_ID_ATTRIBUTE,
    TABLE_JOB_ID_INDEX,
    TABLE_PARTITION_KEY,
    TABLE_TTL_ATTRIBUTE,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, UpdateItemInputTypeDef

_CONDITION_FAILED: Final = "ConditionalCheckFailedException"
_NOT_FOUND: Final = "ResourceNotFoundException"

# Attribute names; every expression refers to them through "#name" placeholders, as several
# (status, error, result, ...) are DynamoDB reserved words.
_NAMES: Final = {
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
}

# The acquire condition, one named part per way a lease may be taken. A record older than its
# retention counts as absent; a lease counts as lapsed only clock_skew after its end by the holder's
# clock, so a writer whose clock runs ahead cannot take over a live lease.
_IS_ABSENT: Final = "attribute_not_exists(#pk)"
_IS_EXPIRED: Final = "#expires_at < :lapsed_before"
_IS_SAME_PAYLOAD: Final = "#payload_hash = :payload_hash"
_IS_RELEASED: Final = "#status IN (:pending, :failed, :dead_lettered)"
_IS_LEASE_LAPSED: Final = "(#status = :in_progress AND #lease_expires_at < :lapsed_before)"
# A cancelled record is never released; a running one asked to stop is not taken over if its worker dies.
_IS_NOT_CANCEL_REQUESTED: Final = "attribute_not_exists(#cancel_requested_at)"
_ACQUIRE_CONDITION: Final = (
    f"{_IS_ABSENT} OR {_IS_EXPIRED} OR ({_IS_SAME_PAYLOAD} AND {_IS_NOT_CANCEL_REQUESTED} "
    f"AND ({_IS_RELEASED} OR {_IS_LEASE_LAPSED}))"
)
_ACQUIRE_UPDATE: Final = (
    "SET #status = :in_progress, #token = :token, #lease_expires_at = :lease_expires_at, "
    "#payload_hash = :payload_hash, #job_id = if_not_exists(#job_id, :job_id), #job_type = :job_type, "
    "#created_at = if_not_exists(#created_at, :now), #updated_at = :now, #expires_at = :expires_at "
    "ADD #attempts :one REMOVE #result, #result_omitted"
)
_IS_HELD: Final = "#token = :token AND #status = :in_progress"
# Cancellation: a job not running (pending, failed, or its worker gone) is cancelled outright.
_IS_NOT_RUNNING: Final = f"#status IN (:pending, :failed) OR {_IS_LEASE_LAPSED}"
_IS_RUNNING: Final = "#status = :in_progress"


class DynamoDbIdempotencyStore:
    """The idempotency store on a DynamoDB table (see the module docstring for its shape).

    The client is created on first use with boto3's configuration (``AWS_ENDPOINT_URL_DYNAMODB``,
    credentials, ``AWS_REGION``), with short timeouts and few retries: the consumer fails closed
    when the store does not answer, so a slow store must not hold a message for long.

    Args:
        table: the table's name (``CLOUDJOBS_IDEMPOTENCY_TABLE``).
        region: the AWS region; boto3's own resolution otherwise.
        session: the boto3 session to create the client from.
        client: a ready DynamoDB client (then ``region``, ``session`` and ``config`` are unused).
        clock_skew: how long after its expiry a lease counts as lapsed (allowance for clocks apart).
        max_pool_connections: HTTP connections kept (one per concurrent request).
        config: extra botocore configuration, merged under this store's.
    """

    def __init__(
        self,
        table: str,
        *,
        region: str | None = None,
        session: boto3.session.Session | None = None,
        client: DynamoDBClient | None = None,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        max_pool_connections: int = 16,
        config: Config | None = None,
    ) -> None:
        self.table = table
        self._region = region
        self._session = session
        self._client = client
        own = Config(
            max_pool_connections=max_pool_connections,
            connect_timeout=2,
            read_timeout=5,
            retries={"mode": "standard", "total_max_attempts": 3},
        )
        self._config = config.merge(own) if config is not None else own
        self._clock_skew = clock_skew
        self._lock = threading.Lock()

    @property
    def client(self) -> DynamoDBClient:
        """The DynamoDB client (created on first use).

        Raises:
            CredentialsError, ConfigurationError: boto3 could not build a client.
        """
        with self._lock:
            if self._client is None:
                with self._wrap(None):
                    self._client = create_client(
                        "dynamodb", session=self._session, region=self._region, config=self._config
                    )
            return self._client

    # -- IdempotencyStore protocol ----------------------------------------------------------------

    def acquire(self, claim: Claim, *, lease: timedelta, retention: timedelta) -> AcquireResult:
        """Take the lease with one conditional UpdateItem; see :meth:`IdempotencyStore.acquire`."""
        now = _now()
        token = uuid.uuid4().hex
        lease_expires_at = now + lease
        request: UpdateItemInputTypeDef = {
            "TableName": self.table,
            "Key": {TABLE_PARTITION_KEY: {"S": claim.key}},
            "UpdateExpression": _ACQUIRE_UPDATE,
            "ConditionExpression": _ACQUIRE_CONDITION,
            "ExpressionAttributeNames": _names(
                "pk",
                "expires_at",
                "payload_hash",
                "status",
                "lease_expires_at",
                "token",
                "job_id",
                "job_type",
                "created_at",
                "updated_at",
                "attempts",
                "result",
                "result_omitted",
                "cancel_requested_at",
            ),
            "ExpressionAttributeValues": {
                ":in_progress": {"S": Status.IN_PROGRESS.value},
                ":pending": {"S": Status.PENDING.value},
                ":failed": {"S": Status.FAILED.value},
                ":dead_lettered": {"S": Status.DEAD_LETTERED.value},
                ":lapsed_before": _number(now - self._clock_skew),
                ":payload_hash": {"S": claim.payload_hash},
                ":token": {"S": token},
                ":lease_expires_at": _number(lease_expires_at),
                ":job_id": {"S": claim.job_id},
                ":job_type": {"S": claim.job_type},
                ":now": _number(now),
                ":expires_at": _seconds(now + retention),
                ":one": {"N": "1"},
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        try:
            with self._wrap(claim.key):
                self.client.update_item(**request)
        except _ConditionFailedError as failed:
            return self._refusal(claim, failed.item)
        return Acquired(token=token, lease_expires_at=lease_expires_at)

    def renew(self, key: str, token: str, *, lease: timedelta, progress: int | None = None) -> Renewal:
        """Extend a held lease with one conditional UpdateItem; see :meth:`IdempotencyStore.renew`.

        The write returns the record as updated (``ALL_NEW``): a cancellation request is read from it.
        """
        now = _now()
        update = "SET #lease_expires_at = :lease_expires_at, #updated_at = :now"
        names = ["lease_expires_at", "updated_at", "token", "status"]
        values: dict[str, AttributeValueTypeDef] = {
            ":lease_expires_at": _number(now + lease),
            ":now": _number(now),
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        if progress is not None:
            update += ", #progress = :progress"
            names.append("progress")
            values[":progress"] = {"N": str(progress)}
        updated = self._update_held(key, update, names, values, return_new=True)
        return Renewal(is_cancel_requested=_NAMES["cancel_requested_at"] in updated)

    def complete(
        self, key: str, token: str, *, result: str | None, result_omitted: str | None, retention: timedelta
    ) -> None:
        """Mark the record completed with one conditional UpdateItem; see
        :meth:`IdempotencyStore.complete`."""
        now = _now()
        sets = [
            "#status = :completed",
            "#updated_at = :now",
            "#expires_at = :expires_at",
            "#progress = :hundred",
        ]
        names = ["status", "updated_at", "expires_at", "progress", "token", "lease_expires_at"]
        values: dict[str, AttributeValueTypeDef] = {
            ":completed": {"S": Status.COMPLETED.value},
            ":now": _number(now),
            ":expires_at": _seconds(now + retention),
            ":hundred": {"N": "100"},
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        for name, text in (("result", result), ("result_omitted", result_omitted)):
            if text is not None:
                sets.append(f"#{name} = :{name}")
                names.append(name)
                values[f":{name}"] = {"S": text}
        update = "SET " + ", ".join(sets) + " REMOVE #token, #lease_expires_at"
        self._update_held(key, update, names, values)

    def release(self, key: str, token: str, *, error: str, is_final: bool) -> None:
        """Give the lease up with one conditional UpdateItem; see :meth:`IdempotencyStore.release`."""
        status = Status.DEAD_LETTERED if is_final else Status.FAILED
        update = (
            "SET #status = :released, #error = :error, #updated_at = :now REMOVE #token, #lease_expires_at"
        )
        values: dict[str, AttributeValueTypeDef] = {
            ":released": {"S": status.value},
            ":error": {"S": error[:2000] or "error"},
            ":now": _number(_now()),
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        self._update_held(key, update, ["status", "error", "updated_at", "token", "lease_expires_at"], values)

    # -- JobControlStore ---------------------------------------------------------------------------

    def put_pending(self, claim: Claim, *, retention: timedelta) -> bool:
        """Write a pending record with one conditional PutItem (never over a live record); True if
        written. See :meth:`~cloudjobs.idempotency.base.JobControlStore.put_pending`."""
        now = _now()
        try:
            with self._wrap(claim.key):
                self.client.put_item(
                    TableName=self.table,
                    Item={
                        TABLE_PARTITION_KEY: {"S": claim.key},
                        TABLE_JOB_ID_ATTRIBUTE: {"S": claim.job_id},
                        "job_type": {"S": claim.job_type},
                        "status": {"S": Status.PENDING.value},
                        "payload_hash": {"S": claim.payload_hash},
                        "attempts": {"N": "0"},
                        "created_at": _number(now),
                        "updated_at": _number(now),
                        TABLE_TTL_ATTRIBUTE: _seconds(now + retention),
                    },
                    ConditionExpression=f"{_IS_ABSENT} OR {_IS_EXPIRED}",
                    ExpressionAttributeNames=_names("pk", "expires_at"),
                    ExpressionAttributeValues={":lapsed_before": _number(now - self._clock_skew)},
                )
        except _ConditionFailedError:
            return False
        return True

    def cancel(self, job_id: str, *, retention: timedelta) -> Cancellation:
        """Cancel a job: find its record (one Query), then one or two conditional UpdateItems; without
        a record, one PutItem of a marker. See :class:`~cloudjobs.idempotency.base.CancelOutcome`."""
        record = self.find(job_id)
        if record is None:
            self._put_marker(job_id, retention)
            return Cancellation(CancelOutcome.MARKED)
        # The index may lag: each write's condition decides on the record as it is, and a refused
        # write returns it, so the loop ends within a few turns whatever happens in between.
        for _ in range(3):
            if record.status in (Status.COMPLETED, Status.DEAD_LETTERED, Status.CANCELLED):
                return Cancellation(CancelOutcome.ALREADY_FINISHED, record)
            now = _now()
            try:
                cancelled = self._cancel_write(record.key, now, is_running=False)
                return Cancellation(CancelOutcome.CANCELLED, cancelled)
            except _ConditionFailedError as failed:
                record = _record(failed.item) if failed.item else record
            if record.status is not Status.IN_PROGRESS:
                continue
            try:
                requested = self._cancel_write(record.key, now, is_running=True)
                return Cancellation(CancelOutcome.REQUESTED, requested)
            except _ConditionFailedError as failed:
                record = _record(failed.item) if failed.item else record
        raise IdempotencyStoreError(
            "the record kept changing while it was cancelled; try again", key=record.key
        )

    def is_marked_cancelled(self, job_id: str) -> bool:
        """True when a live cancellation marker exists: one strongly consistent GetItem."""
        key = cancel_marker_key(job_id)
        with self._wrap(key):
            response = self.client.get_item(
                TableName=self.table,
                Key={TABLE_PARTITION_KEY: {"S": key}},
                ConsistentRead=True,
                ProjectionExpression="#expires_at",
                ExpressionAttributeNames=_names("expires_at"),
            )
        expires_at = _time(response.get("Item", {}).get(TABLE_TTL_ATTRIBUTE))
        return expires_at is not None and expires_at >= _now()

    def finish_cancelled(self, key: str, token: str) -> None:
        """Settle a held lease as cancelled with one conditional UpdateItem."""
        update = (
            "SET #status = :cancelled, #cancel_requested_at = if_not_exists(#cancel_requested_at, :now), "
            "#updated_at = :now REMOVE #token, #lease_expires_at"
        )
        values: dict[str, AttributeValueTypeDef] = {
            ":cancelled": {"S": Status.CANCELLED.value},
            ":now": _number(_now()),
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        names = ["status", "cancel_requested_at", "updated_at", "token", "lease_expires_at"]
        self._update_held(key, update, names, values)

    def find(self, job_id: str) -> Record | None:
        """The live record of a job, by one Query on the job-id index.

        The index is eventually consistent: a record written a moment ago may not be found yet.
        """
        with self._wrap(job_id):
            response = self.client.query(
                TableName=self.table,
                IndexName=TABLE_JOB_ID_INDEX,
                KeyConditionExpression="#job_id = :job_id",
                ExpressionAttributeNames=_names("job_id"),
                ExpressionAttributeValues={":job_id": {"S": job_id}},
            )
        now = _now()
        records = [_record(item) for item in response.get("Items", [])]
        live = [record for record in records if record.expires_at >= now]
        return max(live, key=lambda record: record.updated_at) if live else None

    # -- internals --------------------------------------------------------------------------------

    def _refusal(self, claim: Claim, item: Mapping[str, AttributeValueTypeDef] | None) -> AcquireResult:
        if not item:
            # Only a write that raced a deletion (TTL) gets here: nothing stands in the way now.
            raise IdempotencyStoreError(
                "conditional write refused without the record in the answer; try again", key=claim.key
            )
        record = _record(item)
        if record.payload_hash != claim.payload_hash:
            return PayloadMismatch(job_id=record.job_id)
        if record.status is Status.CANCELLED or record.cancel_requested_at is not None:
            return AlreadyCancelled(job_id=record.job_id)
        if record.status is Status.COMPLETED:
            return AlreadyCompleted(
                job_id=record.job_id, result=record.result, result_omitted=record.result_omitted
            )
        lease_expires_at = record.lease_expires_at or record.updated_at
        return InProgress(
            job_id=record.job_id, available_at=lapse_after(lease_expires_at, clock_skew=self._clock_skew)
        )

    def _update_held(
        self,
        key: str,
        update: str,
        names: list[str],
        values: dict[str, AttributeValueTypeDef],
        *,
        return_new: bool = False,
    ) -> Mapping[str, AttributeValueTypeDef]:
        try:
            with self._wrap(key):
                response = self.client.update_item(
                    TableName=self.table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=update,
                    ConditionExpression=_IS_HELD,
                    ExpressionAttributeNames=_names(*names),
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW" if return_new else "NONE",
                )
        except _ConditionFailedError:
            raise LeaseLostError(f"the lease on {key!r} is no longer held by this token", key=key) from None
        return response.get("Attributes", {})

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
                ":failed": {"S": Status.FAILED.value},
                ":in_progress": {"S": Status.IN_PROGRESS.value},
                ":lapsed_before": _number(now - self._clock_skew),
            }
        values[":now"] = _number(now)
        with self._wrap(key):
            response = self.client.update_item(
                TableName=self.table,
                Key={TABLE_PARTITION_KEY: {"S": key}},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(#pk) AND ({condition})",
                ExpressionAttributeNames=_names("pk", *names),
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        return _record(response["Attributes"])

    def _put_marker(self, job_id: str, retention: timedelta) -> None:
        key = cancel_marker_key(job_id)
        try:
            with self._wrap(key):
                self.client.put_item(
                    TableName=self.table,
                    Item={TABLE_PARTITION_KEY: {"S": key}, TABLE_TTL_ATTRIBUTE: _seconds(_now() + retention)},
                    ConditionExpression=_IS_ABSENT,
                    ExpressionAttributeNames=_names("pk"),
                )
        except _ConditionFailedError:
            pass  # marked already: cancelling twice changes nothing

    @contextmanager
    def _wrap(self, key: str | None) -> Iterator[None]:
        """Translate botocore errors into cloudjobs errors (a failed condition into _ConditionFailedError)."""
        try:
            yield
        except setup_errors() as exc:
            raise setup_error(exc) from exc
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            raise IdempotencyStoreError(
                f"DynamoDB endpoint unreachable: {exc}", key=key, table=self.table
            ) from exc
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == _CONDITION_FAILED:
                item: Mapping[str, AttributeValueTypeDef] | None = exc.response.get("Item")  # type: ignore[assignment]
                raise _ConditionFailedError(item) from None
            message = f"table {self.table!r} does not exist" if code == _NOT_FOUND else str(exc)
            raise IdempotencyStoreError(message, key=key, table=self.table, code=code or None) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise IdempotencyStoreError(str(exc), key=key, table=self.table) from exc


class _ConditionFailedError(Exception):
    """A conditional write's condition was false; ``item`` is the record as it was (ALL_OLD)."""

    def __init__(self, item: Mapping[str, AttributeValueTypeDef] | None) -> None:
        super().__init__("conditional check failed")
        self.item = item


def _names(*names: str) -> dict[str, str]:
    return {f"#{name}": _NAMES[name] for name in names}


def _now() -> datetime:
    return datetime.now(UTC)


def _number(moment: datetime) -> AttributeValueTypeDef:
    # Milliseconds as a decimal fraction of seconds: one unit (seconds) in every record.
    return {"N": f"{moment.timestamp():.3f}"}


def _seconds(moment: datetime) -> AttributeValueTypeDef:
    # DynamoDB TTL reads whole epoch seconds.
    return {"N": str(int(moment.timestamp()))}


def _time(value: AttributeValueTypeDef | None) -> datetime | None:
    if value is None or "N" not in value:
        return None
    return datetime.fromtimestamp(float(Decimal(value["N"])), tz=UTC)


def _text(item: Mapping[str, AttributeValueTypeDef], name: str) -> str | None:
    value = item.get(_NAMES[name])
    return value.get("S") if value is not None else None


def _record(item: Mapping[str, AttributeValueTypeDef]) -> Record:
    epoch = datetime.fromtimestamp(0, tz=UTC)
    progress = item.get("progress")
    return Record(
        key=_text(item, "pk") or "",
        job_id=_text(item, "job_id") or "",
        job_type=_text(item, "job_type") or "",
        status=Status(_text(item, "status")),
        payload_hash=_text(item, "payload_hash") or "",
        attempts=int(item.get("attempts", {}).get("N", "0")),
        created_at=_time(item.get("created_at")) or epoch,
        updated_at=_time(item.get("updated_at")) or epoch,
        expires_at=_time(item.get(TABLE_TTL_ATTRIBUTE)) or epoch,
        lease_expires_at=_time(item.get("lease_expires_at")),
        progress=int(progress["N"]) if progress is not None and "N" in progress else None,
        result=_text(item, "result"),
        result_omitted=_text(item, "result_omitted"),
        error=_text(item, "error"),
        cancel_requested_at=_time(item.get("cancel_requested_at")),
    )
