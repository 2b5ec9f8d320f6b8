"""DynamoDbUniquenessStore: reservations of unique keys in the idempotency table, under
``#unique#<job type>#<unique key>``.

:class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore` holds one and implements
:class:`~cloudjobs.uniqueness.state.UniquenessStore` through it. A reservation is one item: the job
of the window (``unique_job_id``), its state (``unique_state``), the reservation's token and timeout
(``lease_token``, ``reserved_until``), the window's end (``window_ends_at``), where the job's status
record is (``record_key``), and the TTL (``expires_at``: the window's end). It has no ``job_id``
attribute, so the job-id index never sees it.

Requests: a reserve, a takeover, a confirm and a release are one conditional UpdateItem each
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``: an enqueue that finds the key taken learns its job
from the refusal, with no read). So a first enqueue costs two writes (reserve, confirm) and a repeat
within the window one refused write. Times are epoch seconds by the writer's clock; the window's end
is compared with it as it is (clocks apart shift a window by their difference), a reservation's
timeout only ``clock_skew`` late, so a producer whose clock runs ahead cannot take over a live one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.errors import IdempotencyStoreError
from cloudjobs.idempotency.dynamodb_items import (
    ATTRIBUTE_NAMES,
    ConditionFailedError,
    time_of,
    time_value,
    ttl_value,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_schema import TABLE_PARTITION_KEY
from cloudjobs.ids import random_hex
from cloudjobs.uniqueness.state import Held, ReservationState, Reserved, ReserveResult, UniqueClaim

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_NAMES: Final = {
    "pk": ATTRIBUTE_NAMES["pk"],
    "expires_at": ATTRIBUTE_NAMES["expires_at"],
    "token": ATTRIBUTE_NAMES["token"],
    "updated_at": ATTRIBUTE_NAMES["updated_at"],
    "job_type": ATTRIBUTE_NAMES["job_type"],
    "job_id": "unique_job_id",
    "state": "unique_state",
    "reserved_until": "reserved_until",
    "window_ends_at": "window_ends_at",
    "record_key": "record_key",
}
"""Attribute names, through "#name" placeholders (several are DynamoDB reserved words)."""

# The reserve condition, one named part per way a key is free.
_IS_ABSENT: Final = "attribute_not_exists(#pk)"
_IS_WINDOW_OVER: Final = "#window_ends_at < :now"
_IS_REPLACED: Final = "(#job_id = :replacing AND #state = :sent)"
# A takeover needs the very reservation it saw, released or lapsed clock_skew past its timeout.
_IS_SEEN: Final = "#token = :seen_token"
_IS_LAPSED: Final = "(#state = :released OR (#state = :reserved AND #reserved_until < :lapsed_before))"
_IS_HELD: Final = "#token = :token AND #state = :reserved"


class DynamoDbUniquenessStore:
    """Reservations on a DynamoDB table (see the module docstring for the item).

    Args:
        table: the idempotency table's name.
        client: gives the DynamoDB client (the idempotency store creates it on first use).
        clock_skew: how long after its timeout a reservation counts as lapsed.
    """

    def __init__(self, table: str, *, client: Callable[[], DynamoDBClient], clock_skew: timedelta) -> None:
        self._table = table
        self._client = client
        self._clock_skew = clock_skew

    def reserve(self, claim: UniqueClaim, *, replacing: str | None = None) -> ReserveResult:
        """One conditional UpdateItem; see :meth:`UniquenessStore.reserve`."""
        now = utc_now()
        condition = f"{_IS_ABSENT} OR {_IS_WINDOW_OVER}"
        names = ["pk", "window_ends_at"]
        values: dict[str, AttributeValueTypeDef] = {":now": time_value(now)}
        if replacing is not None:
            condition += f" OR {_IS_REPLACED}"
            names += ["job_id", "state"]
            values[":replacing"] = {"S": replacing}
            values[":sent"] = {"S": ReservationState.SENT.value}
        return self._write(
            claim,
            job_id=claim.job_id,
            window_ends_at=now + claim.window,
            condition=condition,
            names=names,
            values=values,
            now=now,
            is_takeover=False,
        )

    def take_over(self, claim: UniqueClaim, held: Held) -> ReserveResult:
        """One conditional UpdateItem on the held reservation's token; see
        :meth:`UniquenessStore.take_over`."""
        now = utc_now()
        values: dict[str, AttributeValueTypeDef] = {
            ":now": time_value(now),
            ":seen_token": {"S": held.token or ""},
            ":released": {"S": ReservationState.RELEASED.value},
            ":lapsed_before": time_value(now - self._clock_skew),
        }
        return self._write(
            claim,
            job_id=held.job_id,
            window_ends_at=held.window_ends_at,
            condition=f"{_IS_SEEN} AND {_IS_LAPSED}",
            names=["token", "state", "reserved_until"],
            values=values,
            now=now,
            is_takeover=True,
        )

    def confirm_reservation(self, key: str, token: str) -> bool:
        """One conditional UpdateItem; see :meth:`UniquenessStore.confirm_reservation`."""
        update = "SET #state = :sent, #updated_at = :now REMOVE #token, #reserved_until"
        values: dict[str, AttributeValueTypeDef] = {
            ":sent": {"S": ReservationState.SENT.value},
            ":now": time_value(utc_now()),
        }
        return self._update_held(
            key, token, update, ["state", "updated_at", "token", "reserved_until"], values
        )

    def release_reservation(self, key: str, token: str) -> None:
        """One conditional UpdateItem; see :meth:`UniquenessStore.release_reservation`."""
        update = "SET #state = :released, #updated_at = :now"
        values: dict[str, AttributeValueTypeDef] = {
            ":released": {"S": ReservationState.RELEASED.value},
            ":now": time_value(utc_now()),
        }
        self._update_held(key, token, update, ["state", "updated_at", "token"], values)

    def _write(
        self,
        claim: UniqueClaim,
        *,
        job_id: str,
        window_ends_at: datetime,
        condition: str,
        names: list[str],
        values: dict[str, AttributeValueTypeDef],
        now: datetime,
        is_takeover: bool,
    ) -> ReserveResult:
        token = random_hex()
        sets = [
            "#job_id = :job_id",
            "#state = :reserved",
            "#token = :token",
            "#reserved_until = :reserved_until",
            "#window_ends_at = :window_ends_at",
            "#job_type = :job_type",
            "#updated_at = :now",
            "#expires_at = :expires_at",
        ]
        values = {
            **values,
            ":job_id": {"S": job_id},
            ":reserved": {"S": ReservationState.RESERVED.value},
            ":token": {"S": token},
            ":reserved_until": time_value(now + claim.reservation),
            ":window_ends_at": time_value(window_ends_at),
            ":job_type": {"S": claim.job_type},
            ":expires_at": ttl_value(window_ends_at + timedelta(seconds=1)),
        }
        update = "SET " + ", ".join(sets)
        if claim.record_key is not None:
            update += ", #record_key = :record_key"
            values[":record_key"] = {"S": claim.record_key}
        else:
            update += " REMOVE #record_key"
        used = {*names, "job_id", "state", "token", "reserved_until", "window_ends_at", "job_type"}
        used |= {"updated_at", "expires_at", "record_key"}
        try:
            with wrap_dynamodb_errors(self._table, claim.key):
                self._client().update_item(
                    TableName=self._table,
                    Key={TABLE_PARTITION_KEY: {"S": claim.key}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames={f"#{name}": _NAMES[name] for name in sorted(used)},
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
        except ConditionFailedError as refused:
            if not refused.item:
                # Only a write that raced a deletion (TTL) gets here: nothing stands in the way now.
                raise IdempotencyStoreError(
                    "conditional write refused without the reservation in the answer; try again",
                    key=claim.key,
                ) from None
            return held_of(refused.item)
        return Reserved(job_id=job_id, token=token, is_takeover=is_takeover)

    def _update_held(
        self, key: str, token: str, update: str, names: list[str], values: dict[str, AttributeValueTypeDef]
    ) -> bool:
        try:
            with wrap_dynamodb_errors(self._table, key):
                self._client().update_item(
                    TableName=self._table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=update,
                    ConditionExpression=_IS_HELD,
                    ExpressionAttributeNames={f"#{name}": _NAMES[name] for name in {*names, "state"}},
                    ExpressionAttributeValues={
                        **values,
                        ":token": {"S": token},
                        ":reserved": {"S": ReservationState.RESERVED.value},
                    },
                )
        except ConditionFailedError:
            return False
        return True


def held_of(item: Mapping[str, AttributeValueTypeDef]) -> Held:
    """A reservation item as :class:`Held`.

    Raises:
        IdempotencyStoreError: the item is not a reservation this version writes.
    """

    def text(name: str) -> str | None:
        value = item.get(_NAMES[name])
        return value.get("S") if value is not None else None

    state, job_id = text("state"), text("job_id")
    window_ends_at = time_of(item.get(_NAMES["window_ends_at"]))
    try:
        reservation_state = ReservationState(state)
    except ValueError:
        reservation_state = None
    if reservation_state is None or job_id is None or window_ends_at is None:
        raise IdempotencyStoreError(f"item is not a unique-job reservation (state {state!r})", key=text("pk"))
    return Held(
        job_id=job_id,
        state=reservation_state,
        token=text("token"),
        reserved_until=time_of(item.get(_NAMES["reserved_until"])),
        window_ends_at=window_ends_at.astimezone(UTC),
        record_key=text("record_key"),
    )
