"""DynamoDbScheduleStore: schedule records in the idempotency table, under ``#schedule#<name>``.

:class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore` holds one and implements
:class:`~cloudjobs.scheduling.state.ScheduleStore` through it. A record is one item: the last tick
claimed (``tick``, epoch seconds), its state, a ``version`` every write adds one to, the claim's
lease, and the last fire (``last_fired_tick``, ``last_job_id``, ``last_fired_at``). It has no
``job_id`` attribute, so the job-id index never sees it.

Requests: a claim is one conditional UpdateItem (``ReturnValuesOnConditionCheckFailure=ALL_OLD``:
a scheduler that lost the race learns the record from the refusal, with no read); a settle is one
conditional UpdateItem on the claim's token; a read is one strongly consistent GetItem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.errors import IdempotencyStoreError, LeaseLostError
from cloudjobs.idempotency.dynamodb_items import (
    ATTRIBUTE_NAMES,
    IS_ABSENT,
    IS_EXPIRED,
    ConditionFailedError,
    time_of,
    time_value,
    ttl_value,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_schema import TABLE_PARTITION_KEY, TABLE_TTL_ATTRIBUTE
from cloudjobs.ids import random_hex
from cloudjobs.scheduling.state import STATE_RETENTION, ScheduleState, TickClaim, TickState, schedule_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_NAMES: Final = {
    "pk": ATTRIBUTE_NAMES["pk"],
    "expires_at": ATTRIBUTE_NAMES["expires_at"],
    "token": ATTRIBUTE_NAMES["token"],
    "lease_expires_at": ATTRIBUTE_NAMES["lease_expires_at"],
    "updated_at": ATTRIBUTE_NAMES["updated_at"],
    "schedule": "schedule",
    "tick": "tick",
    "tick_state": "tick_state",
    "version": "version",
    "owner": "owner",
    "last_fired_tick": "last_fired_tick",
    "last_job_id": "last_job_id",
    "last_fired_at": "last_fired_at",
}
"""Attribute names, through "#name" placeholders (several are DynamoDB reserved words)."""
_TICK_STATES: Final = frozenset(state.value for state in TickState)

# The claim condition, one named part per way a tick may be claimed. The seen version alone makes the
# write safe; not going back in time guards against a writer that decided from a wrong tick.
_IS_SEEN: Final = "#version = :seen_version"
_IS_NOT_BACKWARDS: Final = "#tick <= :tick"
_CLAIM_FIRST: Final = f"{IS_ABSENT} OR {IS_EXPIRED}"
_CLAIM_NEXT: Final = f"{_IS_SEEN} AND {_IS_NOT_BACKWARDS}"
_CLAIM_UPDATE: Final = (
    "SET #schedule = :schedule, #tick = :tick, #tick_state = :firing, #token = :token, "
    "#lease_expires_at = :lease_expires_at, #owner = :owner, #updated_at = :now, #expires_at = :expires_at "
    "ADD #version :one"
)
# A settle needs the claim's token on the very tick it claimed, still firing.
_IS_HELD: Final = "#token = :token AND #tick_state = :firing AND #tick = :tick"


class DynamoDbScheduleStore:
    """Schedule records on a DynamoDB table (see the module docstring for the item).

    Args:
        table: the idempotency table's name.
        client: gives the DynamoDB client (the idempotency store creates it on first use).
        clock_skew: how long after its expiry a record counts as expired (allowance for clocks apart).
    """

    def __init__(self, table: str, *, client: Callable[[], DynamoDBClient], clock_skew: timedelta) -> None:
        self._table = table
        self._client = client
        self._clock_skew = clock_skew

    def schedule_state(self, schedule: str) -> ScheduleState | None:
        """The live record: one strongly consistent GetItem."""
        key = schedule_key(schedule)
        with wrap_dynamodb_errors(self._table, key):
            response = self._client().get_item(
                TableName=self._table, Key={TABLE_PARTITION_KEY: {"S": key}}, ConsistentRead=True
            )
        item = response.get("Item")
        if item is None:
            return None
        state = state_of(item)
        return state if state.expires_at >= utc_now() else None

    def claim_tick(
        self, schedule: str, tick: datetime, *, seen: ScheduleState | None, lease: timedelta, owner: str
    ) -> TickClaim | ScheduleState:
        """Claim a tick with one conditional UpdateItem; see :meth:`ScheduleStore.claim_tick`."""
        key = schedule_key(schedule)
        now = utc_now()
        token = random_hex()
        lease_expires_at = now + lease
        values: dict[str, AttributeValueTypeDef] = {
            ":schedule": {"S": schedule},
            ":tick": _tick_value(tick),
            ":firing": {"S": TickState.FIRING.value},
            ":token": {"S": token},
            ":lease_expires_at": time_value(lease_expires_at),
            ":owner": {"S": owner},
            ":now": time_value(now),
            ":expires_at": ttl_value(now + STATE_RETENTION),
            ":one": {"N": "1"},
        }
        names = ["schedule", "tick", "tick_state", "token", "lease_expires_at", "owner", "updated_at"]
        names += ["expires_at", "version"]
        if seen is None:
            condition = _CLAIM_FIRST
            names.append("pk")
            values[":lapsed_before"] = time_value(now - self._clock_skew)
        else:
            condition = _CLAIM_NEXT
            values[":seen_version"] = {"N": str(seen.version)}
        try:
            with wrap_dynamodb_errors(self._table, key):
                self._client().update_item(
                    TableName=self._table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=_CLAIM_UPDATE,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=_expression_names(names),
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as refused:
            if not refused.item:
                # Only a write that raced a deletion (TTL) gets here: nothing stands in the way now.
                raise IdempotencyStoreError(
                    "conditional write refused without the record in the answer; try again",
                    key=key,
                    table=self._table,
                ) from None
            return state_of(refused.item)
        return TickClaim(schedule, tick, token, lease_expires_at, seen)

    def settle_tick(
        self, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
    ) -> ScheduleState:
        """Record a claimed tick's outcome with one conditional UpdateItem; see
        :meth:`ScheduleStore.settle_tick`."""
        key = schedule_key(claim.schedule)
        now = utc_now()
        sets = ["#tick_state = :outcome", "#updated_at = :now", "#expires_at = :expires_at"]
        names = ["tick_state", "updated_at", "expires_at", "token", "lease_expires_at", "version", "tick"]
        values: dict[str, AttributeValueTypeDef] = {
            ":outcome": {"S": outcome.value},
            ":now": time_value(now),
            ":expires_at": ttl_value(now + STATE_RETENTION),
            ":token": {"S": claim.token},
            ":firing": {"S": TickState.FIRING.value},
            ":tick": _tick_value(claim.tick),
            ":one": {"N": "1"},
        }
        if outcome is TickState.FIRED:
            if job_id is None:
                raise ValueError("a fired tick needs its job id")
            sets += ["#last_fired_tick = :tick", "#last_job_id = :job_id", "#last_fired_at = :now"]
            names += ["last_fired_tick", "last_job_id", "last_fired_at"]
            values[":job_id"] = {"S": job_id}
        update = "SET " + ", ".join(sets) + " REMOVE #token, #lease_expires_at ADD #version :one"
        try:
            with wrap_dynamodb_errors(self._table, key):
                response = self._client().update_item(
                    TableName=self._table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=update,
                    ConditionExpression=_IS_HELD,
                    ExpressionAttributeNames=_expression_names(names),
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
        except ConditionFailedError:
            raise LeaseLostError(
                f"the claim on tick {claim.tick} of {claim.schedule!r} was lost", key=key
            ) from None
        return state_of(response["Attributes"])


def state_of(item: Mapping[str, AttributeValueTypeDef]) -> ScheduleState:
    """A table item as a ScheduleState.

    Raises:
        IdempotencyStoreError: the item is not a schedule record this version can read.
    """
    epoch = datetime.fromtimestamp(0, tz=UTC)
    tick = time_of(item.get("tick"))
    state = _text(item, "tick_state")
    version = item.get("version", {}).get("N")
    if tick is None or version is None or state not in _TICK_STATES:
        raise IdempotencyStoreError(
            "schedule record without a tick, state or version: not written by this version of cloudjobs",
            key=item.get(TABLE_PARTITION_KEY, {}).get("S"),
        )
    return ScheduleState(
        schedule=_text(item, "schedule") or "",
        tick=tick,
        tick_state=TickState(state),
        version=int(version),
        lease_expires_at=time_of(item.get(_NAMES["lease_expires_at"])),
        owner=_text(item, "owner") or "",
        last_fired_tick=time_of(item.get("last_fired_tick")),
        last_job_id=_text(item, "last_job_id"),
        last_fired_at=time_of(item.get("last_fired_at")),
        updated_at=time_of(item.get(_NAMES["updated_at"])) or epoch,
        expires_at=time_of(item.get(TABLE_TTL_ATTRIBUTE)) or epoch,
    )


def _tick_value(tick: datetime) -> AttributeValueTypeDef:
    """A tick as whole epoch seconds (ticks fall on whole seconds)."""
    return {"N": str(int(tick.timestamp()))}


def _text(item: Mapping[str, AttributeValueTypeDef], name: str) -> str | None:
    value = item.get(_NAMES[name])
    return value.get("S") if value is not None else None


def _expression_names(names: list[str]) -> dict[str, str]:
    """``ExpressionAttributeNames`` for exactly these names (DynamoDB Local rejects unused ones)."""
    return {f"#{name}": _NAMES[name] for name in names}
