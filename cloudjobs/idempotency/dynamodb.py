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

The item shape is in :mod:`cloudjobs.idempotency.dynamodb_items`; pending records and cancellation
(the JobControlStore protocol) are in :mod:`cloudjobs.idempotency.dynamodb_control`, and schedule
records (the ScheduleStore protocol) in :mod:`cloudjobs.scheduling.dynamodb`, and unique-job
reservations (the UniquenessStore protocol) in :mod:`cloudjobs.uniqueness.dynamodb`.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import boto3
from botocore.config import Config

from cloudjobs.aws_clients import create_client
from cloudjobs.errors import IdempotencyStoreError
from cloudjobs.flows.dynamodb import DynamoDbFlowStore
from cloudjobs.idempotency.base import (
    DEFAULT_CLOCK_SKEW,
    Acquired,
    AcquireResult,
    Cancellation,
    Claim,
    InProgress,
    Record,
    Renewal,
    Status,
    lapse_after,
    standing_refusal,
)
from cloudjobs.idempotency.dynamodb_control import DynamoDbJobControl
from cloudjobs.idempotency.dynamodb_items import (
    ATTRIBUTE_NAMES,
    IS_ABSENT,
    IS_EXPIRED,
    IS_LEASE_LAPSED,
    ConditionFailedError,
    expression_names,
    record_of,
    time_value,
    ttl_value,
    update_held,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_register import DEFAULT_REFRESH, CancellationRegister
from cloudjobs.idempotency.dynamodb_schema import TABLE_JOB_ID_INDEX, TABLE_PARTITION_KEY
from cloudjobs.ids import random_hex
from cloudjobs.scheduling.dynamodb import DynamoDbScheduleStore
from cloudjobs.scheduling.state import ScheduleState, TickClaim, TickState
from cloudjobs.uniqueness.dynamodb import DynamoDbUniquenessStore
from cloudjobs.uniqueness.state import Held, ReserveResult, UniqueClaim

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, UpdateItemInputTypeDef

# The acquire condition, one named part per way a lease may be taken (the shared parts, with why a
# lease lapses only clock_skew late, are in dynamodb_items).
_IS_SAME_PAYLOAD: Final = "#payload_hash = :payload_hash"
_IS_RELEASED: Final = "#status IN (:pending, :retrying, :dead_lettered)"
# A cancelled record is never released; a running one asked to stop is not taken over if its worker dies.
_IS_NOT_CANCEL_REQUESTED: Final = "attribute_not_exists(#cancel_requested_at)"
_ACQUIRE_CONDITION: Final = (
    f"{IS_ABSENT} OR {IS_EXPIRED} OR ({_IS_SAME_PAYLOAD} AND {_IS_NOT_CANCEL_REQUESTED} "
    f"AND ({_IS_RELEASED} OR {IS_LEASE_LAPSED}))"
)
_ACQUIRE_UPDATE: Final = (
    "SET #status = :in_progress, #token = :token, #lease_expires_at = :lease_expires_at, "
    "#payload_hash = :payload_hash, #job_id = if_not_exists(#job_id, :job_id), #job_type = :job_type, "
    "#created_at = if_not_exists(#created_at, :now), #updated_at = :now, #expires_at = :expires_at, "
    "#correlation_id = if_not_exists(#correlation_id, :correlation_id), "
    "#trace_id = if_not_exists(#trace_id, :trace_id) "
    "ADD #attempts :one REMOVE #result, #result_omitted"
)


class DynamoDbIdempotencyStore:
    """The idempotency store on a DynamoDB table (see the module docstring for its shape).

    It also implements JobControlStore for pending records and cancellation, by delegating to a
    :class:`~cloudjobs.idempotency.dynamodb_control.DynamoDbJobControl` on the same table and client,
    and ScheduleStore for the scheduler's claims, through a
    :class:`~cloudjobs.scheduling.dynamodb.DynamoDbScheduleStore`.

    The client is created on first use with boto3's configuration (``AWS_ENDPOINT_URL_DYNAMODB``,
    credentials, ``AWS_REGION``), with short timeouts and few retries: the consumer fails closed
    when the store does not answer, so a slow store must not hold a message for long. Client-side
    parameter validation is off (the table validates every request itself).

    Args:
        table: the table's name (``CLOUDJOBS_IDEMPOTENCY_TABLE``).
        region: the AWS region; boto3's own resolution otherwise.
        session: the boto3 session to create the client from.
        client: a ready DynamoDB client (then ``region``, ``session`` and ``config`` are unused).
        clock_skew: how long after its expiry a lease counts as lapsed (allowance for clocks apart).
        max_pool_connections: HTTP connections kept (one per concurrent request).
        config: extra botocore configuration, merged under this store's.
        cancel_refresh: how old a consumer's read of the cancellation register may be when it checks
            a received batch, which ``cancel`` waits out when it writes a marker (see
            :mod:`cloudjobs.idempotency.dynamodb_register`); every process on the table must use the
            same.
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
        cancel_refresh: timedelta = DEFAULT_REFRESH,
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
            # Every request is built here, typed against the service model; botocore's client-side
            # check of it walked each expression name and value on every call, a tenth of a write's
            # client CPU (the table checks them anyway; bench/idempotency.py).
            parameter_validation=False,
        )
        self._config = config.merge(own) if config is not None else own
        self._clock_skew = clock_skew
        self._lock = threading.Lock()
        self._control = DynamoDbJobControl(
            table,
            client=lambda: self.client,
            clock_skew=clock_skew,
            find=self.find,
            register=CancellationRegister(table, client=lambda: self.client, refresh=cancel_refresh),
        )
        self._schedules = DynamoDbScheduleStore(table, client=lambda: self.client, clock_skew=clock_skew)
        self._unique = DynamoDbUniquenessStore(table, client=lambda: self.client, clock_skew=clock_skew)
        self._flows = DynamoDbFlowStore(table, client=lambda: self.client)

    @property
    def flows(self) -> DynamoDbFlowStore:
        """The flows kept on this table's records (see :mod:`cloudjobs.flows`)."""
        return self._flows

    @property
    def client(self) -> DynamoDBClient:
        """The DynamoDB client (created on first use).

        Raises:
            CredentialsError, ConfigurationError: boto3 could not build a client.
        """
        with self._lock:
            if self._client is None:
                with wrap_dynamodb_errors(self.table, None):
                    self._client = create_client(
                        "dynamodb", session=self._session, region=self._region, config=self._config
                    )
            return self._client

    def prepare(self) -> None:
        """Build the client now (botocore loads the service's model: tens of milliseconds of CPU),
        sending no request."""
        _ = self.client

    # -- IdempotencyStore protocol ----------------------------------------------------------------

    def acquire(self, claim: Claim, *, lease: timedelta, retention: timedelta) -> AcquireResult:
        """Take the lease with one conditional UpdateItem; see :meth:`IdempotencyStore.acquire`."""
        now = utc_now()
        token = random_hex()
        lease_expires_at = now + lease
        request: UpdateItemInputTypeDef = {
            "TableName": self.table,
            "Key": {TABLE_PARTITION_KEY: {"S": claim.key}},
            "UpdateExpression": _ACQUIRE_UPDATE,
            "ConditionExpression": _ACQUIRE_CONDITION,
            "ExpressionAttributeNames": expression_names(
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
                "correlation_id",
                "trace_id",
            ),
            "ExpressionAttributeValues": {
                ":in_progress": {"S": Status.IN_PROGRESS.value},
                ":pending": {"S": Status.PENDING.value},
                ":retrying": {"S": Status.RETRYING.value},
                ":dead_lettered": {"S": Status.DEAD_LETTERED.value},
                ":lapsed_before": time_value(now - self._clock_skew),
                ":payload_hash": {"S": claim.payload_hash},
                ":token": {"S": token},
                ":lease_expires_at": time_value(lease_expires_at),
                ":job_id": {"S": claim.job_id},
                ":job_type": {"S": claim.job_type},
                ":now": time_value(now),
                ":expires_at": ttl_value(now + retention),
                ":one": {"N": "1"},
                # Empty when unknown (read back as None): the first value written stays.
                ":correlation_id": {"S": claim.correlation_id or ""},
                ":trace_id": {"S": claim.trace_id or ""},
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        try:
            with wrap_dynamodb_errors(self.table, claim.key):
                self.client.update_item(**request)
        except ConditionFailedError as failed:
            return self._refusal(claim, failed.item)
        return Acquired(token=token, lease_expires_at=lease_expires_at)

    def renew(self, key: str, token: str, *, lease: timedelta, progress: int | None = None) -> Renewal:
        """Extend a held lease with one conditional UpdateItem; see :meth:`IdempotencyStore.renew`.

        The write returns the record as updated (``ALL_NEW``): a cancellation request is read from it.
        """
        now = utc_now()
        update = "SET #lease_expires_at = :lease_expires_at, #updated_at = :now"
        names = ["lease_expires_at", "updated_at", "token", "status"]
        values: dict[str, AttributeValueTypeDef] = {
            ":lease_expires_at": time_value(now + lease),
            ":now": time_value(now),
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        if progress is not None:
            update += ", #progress = :progress"
            names.append("progress")
            values[":progress"] = {"N": str(progress)}
        updated = update_held(self.client, self.table, key, update, names, values, return_new=True)
        return Renewal(is_cancel_requested=ATTRIBUTE_NAMES["cancel_requested_at"] in updated)

    def complete(
        self, key: str, token: str, *, result: str | None, result_omitted: str | None, retention: timedelta
    ) -> None:
        """Mark the record completed with one conditional UpdateItem; see
        :meth:`IdempotencyStore.complete`."""
        now = utc_now()
        sets = [
            "#status = :completed",
            "#updated_at = :now",
            "#expires_at = :expires_at",
            "#progress = :hundred",
        ]
        names = ["status", "updated_at", "expires_at", "progress", "token", "lease_expires_at"]
        values: dict[str, AttributeValueTypeDef] = {
            ":completed": {"S": Status.COMPLETED.value},
            ":now": time_value(now),
            ":expires_at": ttl_value(now + retention),
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
        update_held(self.client, self.table, key, update, names, values)

    def release(self, key: str, token: str, *, error: str, is_final: bool) -> None:
        """Give the lease up with one conditional UpdateItem; see :meth:`IdempotencyStore.release`."""
        status = Status.DEAD_LETTERED if is_final else Status.RETRYING
        update = (
            "SET #status = :released, #error = :error, #updated_at = :now REMOVE #token, #lease_expires_at"
        )
        values: dict[str, AttributeValueTypeDef] = {
            ":released": {"S": status.value},
            ":error": {"S": error[:2000] or "error"},
            ":now": time_value(utc_now()),
            ":token": {"S": token},
            ":in_progress": {"S": Status.IN_PROGRESS.value},
        }
        update_held(
            self.client,
            self.table,
            key,
            update,
            ["status", "error", "updated_at", "token", "lease_expires_at"],
            values,
        )

    def find(self, job_id: str) -> Record | None:
        """The live record of a job, by one Query on the job-id index.

        The index is eventually consistent: a record written a moment ago may not be found yet.
        """
        with wrap_dynamodb_errors(self.table, job_id):
            response = self.client.query(
                TableName=self.table,
                IndexName=TABLE_JOB_ID_INDEX,
                KeyConditionExpression="#job_id = :job_id",
                ExpressionAttributeNames=expression_names("job_id"),
                ExpressionAttributeValues={":job_id": {"S": job_id}},
            )
        now = utc_now()
        records = [record_of(item) for item in response.get("Items", [])]
        live = [record for record in records if record.expires_at >= now]
        return max(live, key=lambda record: record.updated_at) if live else None

    def get_record(self, key: str) -> Record | None:
        """The live record under ``key``: one strongly consistent GetItem on the table (1 read unit
        per 4 KB of record; a stored result counts)."""
        with wrap_dynamodb_errors(self.table, key):
            response = self.client.get_item(
                TableName=self.table, Key={TABLE_PARTITION_KEY: {"S": key}}, ConsistentRead=True
            )
        item = response.get("Item")
        if item is None or ATTRIBUTE_NAMES["status"] not in item:
            return None
        record = record_of(item)
        return record if record.expires_at >= utc_now() else None

    # -- UniquenessStore protocol -----------------------------------------------------------------

    def reserve(self, claim: UniqueClaim, *, replacing: str | None = None) -> ReserveResult:
        """See :meth:`DynamoDbUniquenessStore.reserve`."""
        return self._unique.reserve(claim, replacing=replacing)

    def take_over(self, claim: UniqueClaim, held: Held) -> ReserveResult:
        """See :meth:`DynamoDbUniquenessStore.take_over`."""
        return self._unique.take_over(claim, held)

    def confirm_reservation(self, key: str, token: str) -> bool:
        """See :meth:`DynamoDbUniquenessStore.confirm_reservation`."""
        return self._unique.confirm_reservation(key, token)

    def release_reservation(self, key: str, token: str) -> None:
        """See :meth:`DynamoDbUniquenessStore.release_reservation`."""
        self._unique.release_reservation(key, token)

    # -- JobControlStore protocol -----------------------------------------------------------------

    def put_pending(self, claim: Claim, *, retention: timedelta) -> bool:
        """See :meth:`DynamoDbJobControl.put_pending`."""
        return self._control.put_pending(claim, retention=retention)

    def find_through_alias(self, job_id: str) -> Record | None:
        """See :meth:`DynamoDbJobControl.find_through_alias`."""
        return self._control.find_through_alias(job_id)

    def cancel(self, job_id: str, *, retention: timedelta) -> Cancellation:
        """See :meth:`DynamoDbJobControl.cancel`."""
        return self._control.cancel(job_id, retention=retention)

    def is_marked_cancelled(self, job_id: str) -> bool:
        """See :meth:`DynamoDbJobControl.is_marked_cancelled`."""
        return self._control.is_marked_cancelled(job_id)

    def cancel_marker_expiry(self, job_id: str) -> datetime | None:
        """See :meth:`DynamoDbJobControl.cancel_marker_expiry`."""
        return self._control.cancel_marker_expiry(job_id)

    def marked_cancelled(self, job_ids: Collection[str]) -> set[str]:
        """See :meth:`DynamoDbJobControl.marked_cancelled`."""
        return self._control.marked_cancelled(job_ids)

    def finish_cancelled(self, key: str, token: str) -> None:
        """See :meth:`DynamoDbJobControl.finish_cancelled`."""
        self._control.finish_cancelled(key, token)

    # -- ScheduleStore protocol -------------------------------------------------------------------

    def schedule_state(self, schedule: str) -> ScheduleState | None:
        """See :meth:`DynamoDbScheduleStore.schedule_state`."""
        return self._schedules.schedule_state(schedule)

    def claim_tick(
        self, schedule: str, tick: datetime, *, seen: ScheduleState | None, lease: timedelta, owner: str
    ) -> TickClaim | ScheduleState:
        """See :meth:`DynamoDbScheduleStore.claim_tick`."""
        return self._schedules.claim_tick(schedule, tick, seen=seen, lease=lease, owner=owner)

    def settle_tick(
        self, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
    ) -> ScheduleState:
        """See :meth:`DynamoDbScheduleStore.settle_tick`."""
        return self._schedules.settle_tick(claim, outcome, job_id=job_id)

    # -- internals --------------------------------------------------------------------------------

    def _refusal(self, claim: Claim, item: Mapping[str, AttributeValueTypeDef] | None) -> AcquireResult:
        if not item:
            # Only a write that raced a deletion (TTL) gets here: nothing stands in the way now.
            raise IdempotencyStoreError(
                "conditional write refused without the record in the answer; try again", key=claim.key
            )
        record = record_of(item)
        refusal = standing_refusal(record, claim)
        if refusal is not None:
            return refusal
        # The write was refused, so a live lease stands in the way.
        lease_expires_at = record.lease_expires_at or record.updated_at
        return InProgress(
            job_id=record.job_id, available_at=lapse_after(lease_expires_at, clock_skew=self._clock_skew)
        )
