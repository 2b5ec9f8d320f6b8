"""DynamoDbLimiter: rate budgets and concurrency slots as items of the idempotency table.

Items (no ``job_id`` attribute, so the job-id index never sees them):

- ``pk = #limit#rate#<job type>[#<key>]``: ``tat`` (GCRA's theoretical arrival time, epoch seconds
  with microseconds) and ``expires_at`` (TTL, a day after ``tat``: a key at rest is forgotten);
- ``pk = #limit#concurrency#<job type>[#<key>]``: ``holders``, a map of lease token → lease end
  (epoch seconds), and ``expires_at``.

**A start is one conditional UpdateItem.** DynamoDB has no ``max()``, so the write is one of two,
chosen from the last ``tat`` this process saw (in the answer of its previous write): *idle*
(``tat <= now``: ``SET tat = now + interval``) or *busy* (``now < tat <= now + tolerance``:
``SET tat = tat + interval``). The two conditions do not overlap, so two writers can never both
spend the same part of the budget. A refusal carries the item (``ALL_OLD``): over the limit, it
says when to try again; a wrong guess (the key went idle or busy meanwhile) is corrected by a second
write, the only case with two.

**A slot is one conditional UpdateItem** adding the caller's lease to ``holders`` while
``size(holders) < limit``. The first use of a key creates the item (a second write). Leases whose
holder died stay in the map until a taker finds the map full: the refusal carries the map, and the
taker removes the lapsed leases (conditional on their ends being still those it saw, so a renewal
in between wins) and adds its own in one more write. Renewal and release are one write each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from cloudjobs.errors import IdempotencyStoreError
from cloudjobs.idempotency.dynamodb_items import (
    ConditionFailedError,
    ttl_value,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_schema import TABLE_PARTITION_KEY, TABLE_TTL_ATTRIBUTE
from cloudjobs.ids import random_hex
from cloudjobs.limits.base import (
    DEFAULT_CLOCK_SKEW,
    Granted,
    RateAnswer,
    RateExceeded,
    Slot,
    SlotAnswer,
    SlotsFull,
    gcra,
)
from cloudjobs.limits.spec import RateLimit

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_NAMES: Final = {"#pk": TABLE_PARTITION_KEY, "#tat": "tat", "#expires_at": TABLE_TTL_ATTRIBUTE}
_KEEP_AT_REST: Final = timedelta(days=1)
"""How long an item outlives its last use before TTL may delete it (deleting it changes nothing)."""
_MAX_TRIES: Final = 4
_MAX_SEEN_KEYS: Final = 10_000
"""Keys whose last tat a process remembers (per-tenant keys come and go); past this it starts over."""
_MAX_REMOVED: Final = 20
"""Lapsed leases removed by one write (more are removed by the next takers)."""

# Rate: two disjoint conditions, one per update (see the module docstring).
_IS_IDLE: Final = "attribute_not_exists(#pk) OR #tat <= :now"
_IDLE_UPDATE: Final = "SET #tat = :next, #expires_at = :expires_at"
_IS_BUSY: Final = "#tat > :now AND #tat <= :latest"
_BUSY_UPDATE: Final = "SET #tat = #tat + :interval, #expires_at = :expires_at"
# Concurrency.
# attribute_exists first: size() of a missing attribute is false on DynamoDB, an error on moto.
_HAS_ROOM: Final = "attribute_exists(#holders) AND size(#holders) < :limit"
_IS_HOLDER: Final = "attribute_exists(#holders.#token)"


class DynamoDbLimiter:
    """A :class:`~cloudjobs.limits.base.Limiter` on the idempotency table (see the module docstring).

    Args:
        table: the idempotency table's name.
        client: gives the DynamoDB client (the idempotency store's, created on first use).
        clock_skew: how long after its end a lease counts as lapsed.
    """

    def __init__(
        self, table: str, *, client: Callable[[], DynamoDBClient], clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    ) -> None:
        self._table = table
        self._client = client
        self._clock_skew = clock_skew
        # The last tat seen per key: it chooses between the idle and the busy write.
        self._seen: dict[str, float] = {}

    # -- rate -------------------------------------------------------------------------------------

    def take(self, key: str, rate: RateLimit) -> RateAnswer:
        """One conditional UpdateItem (two when the key changed between idle and busy); see
        :meth:`Limiter.take`."""
        interval = rate.interval.total_seconds()
        tolerance = rate.tolerance.total_seconds()
        for _ in range(_MAX_TRIES):
            now = utc_now().timestamp()
            seen = self._seen.get(key)
            is_busy = seen is not None and seen > now
            values: dict[str, AttributeValueTypeDef] = {
                ":now": _seconds(now),
                ":expires_at": ttl_value(datetime.fromtimestamp(now, tz=UTC) + rate.period + _KEEP_AT_REST),
            }
            names: tuple[str, ...]
            if is_busy:
                values[":latest"] = _seconds(now + tolerance)
                values[":interval"] = _seconds(interval)
                update, condition, names = _BUSY_UPDATE, _IS_BUSY, ("#tat", "#expires_at")
            else:
                values[":next"] = _seconds(now + interval)
                update, condition, names = _IDLE_UPDATE, _IS_IDLE, ("#pk", "#tat", "#expires_at")
            try:
                response = self._update(key, update, condition, names, values, return_new=True)
            except ConditionFailedError as refused:
                tat = _number(refused.item, "tat") if refused.item else None
                if tat is None:
                    self._seen.pop(key, None)
                    continue
                self._seen[key] = tat
                _, retry_at = gcra(tat, now, rate)
                if retry_at is not None:
                    return RateExceeded(retry_at=datetime.fromtimestamp(retry_at, tz=UTC))
                continue  # the key changed between idle and busy: the other write fits
            new = _number(response, "tat")
            if new is not None:
                if len(self._seen) >= _MAX_SEEN_KEYS:
                    self._seen.clear()
                self._seen[key] = new
            return Granted()
        # Lost every race in a row: the budget is being spent as fast as it refills.
        return RateExceeded(retry_at=utc_now() + rate.interval)

    # -- concurrency ------------------------------------------------------------------------------

    def acquire(self, key: str, limit: int, *, lease: timedelta) -> SlotAnswer:
        """One conditional UpdateItem (a second to create the key's item, or to clear lapsed
        leases); see :meth:`Limiter.acquire`."""
        token = random_hex()
        for _ in range(_MAX_TRIES):
            now = utc_now()
            expires_at = now + lease
            values: dict[str, AttributeValueTypeDef] = {
                ":lease": _seconds(expires_at.timestamp()),
                ":expires_at": ttl_value(expires_at + _KEEP_AT_REST),
                ":limit": {"N": str(limit)},
            }
            names = {"#holders": "holders", "#token": token, "#expires_at": TABLE_TTL_ATTRIBUTE}
            try:
                self._update(
                    key,
                    "SET #holders.#token = :lease, #expires_at = :expires_at",
                    _HAS_ROOM,
                    names,
                    values,
                )
                return Slot(token=token, expires_at=expires_at)
            except ConditionFailedError as refused:
                item = refused.item
            if not item or "holders" not in item:
                if self._create(key, token, expires_at):
                    return Slot(token=token, expires_at=expires_at)
                continue
            holders = _holders(item)
            lapsed = [
                (t, end)
                for t, end in holders.items()
                if end + self._clock_skew.total_seconds() < now.timestamp()
            ]
            live = [end for t, end in holders.items() if (t, end) not in lapsed]
            if len(live) >= limit:
                return SlotsFull(lapses_at=datetime.fromtimestamp(min(live), tz=UTC) + self._clock_skew)
            if self._take_over(key, token, expires_at, limit, lapsed[:_MAX_REMOVED], item):
                return Slot(token=token, expires_at=expires_at)
        return SlotsFull(lapses_at=utc_now() + timedelta(seconds=1))

    def renew(self, key: str, token: str, *, lease: timedelta) -> bool:
        """One conditional UpdateItem; see :meth:`Limiter.renew`."""
        expires_at = utc_now() + lease
        try:
            self._update(
                key,
                "SET #holders.#token = :lease, #expires_at = :expires_at",
                _IS_HOLDER,
                {"#holders": "holders", "#token": token, "#expires_at": TABLE_TTL_ATTRIBUTE},
                {
                    ":lease": _seconds(expires_at.timestamp()),
                    ":expires_at": ttl_value(expires_at + _KEEP_AT_REST),
                },
            )
        except ConditionFailedError:
            return False
        return True

    def release(self, key: str, token: str) -> None:
        """One conditional UpdateItem; see :meth:`Limiter.release`."""
        # A lease that lapsed and was cleared by a taker: nothing to give back.
        with contextlib.suppress(ConditionFailedError):
            self._update(
                key, "REMOVE #holders.#token", _IS_HOLDER, {"#holders": "holders", "#token": token}, {}
            )

    # -- internals --------------------------------------------------------------------------------

    def _create(self, key: str, token: str, expires_at: datetime) -> bool:
        """The key's first slot: the item with a one-lease map (False: another writer created it)."""
        try:
            self._update(
                key,
                "SET #holders = :holders, #expires_at = :expires_at",
                "attribute_not_exists(#pk)",
                {"#pk": TABLE_PARTITION_KEY, "#holders": "holders", "#expires_at": TABLE_TTL_ATTRIBUTE},
                {
                    ":holders": {"M": {token: _seconds(expires_at.timestamp())}},
                    ":expires_at": ttl_value(expires_at + _KEEP_AT_REST),
                },
            )
        except ConditionFailedError:
            return False
        return True

    def _take_over(
        self,
        key: str,
        token: str,
        expires_at: datetime,
        limit: int,
        lapsed: list[tuple[str, float]],
        item: Mapping[str, AttributeValueTypeDef],
    ) -> bool:
        """Remove lapsed leases and add ours in one write, if those leases are still as seen."""
        names = {"#holders": "holders", "#token": token, "#expires_at": TABLE_TTL_ATTRIBUTE}
        values: dict[str, AttributeValueTypeDef] = {
            ":lease": _seconds(expires_at.timestamp()),
            ":expires_at": ttl_value(expires_at + _KEEP_AT_REST),
            ":room": {"N": str(limit + len(lapsed))},
        }
        removes = []
        conditions = ["size(#holders) < :room"]
        raw = item["holders"].get("M", {})
        for index, (lapsed_token, _) in enumerate(lapsed):
            names[f"#lapsed{index}"] = lapsed_token
            values[f":lapsed{index}"] = raw[lapsed_token]
            removes.append(f"#holders.#lapsed{index}")
            # Still the end we saw: not renewed since, so still lapsed.
            conditions.append(f"#holders.#lapsed{index} = :lapsed{index}")
        update = "SET #holders.#token = :lease, #expires_at = :expires_at"
        if removes:
            update += " REMOVE " + ", ".join(removes)
        try:
            self._update(key, update, " AND ".join(conditions), names, values)
        except ConditionFailedError:
            return False
        return True

    def _update(
        self,
        key: str,
        update: str,
        condition: str,
        names: Mapping[str, str] | tuple[str, ...],
        values: dict[str, AttributeValueTypeDef],
        *,
        return_new: bool = False,
    ) -> Mapping[str, AttributeValueTypeDef]:
        expression_names = {name: _NAMES[name] for name in names} if isinstance(names, tuple) else dict(names)
        with wrap_dynamodb_errors(self._table, key):
            if values:
                response = self._client().update_item(
                    TableName=self._table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=expression_names,
                    ExpressionAttributeValues=values,
                    ReturnValues="UPDATED_NEW" if return_new else "NONE",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            else:
                response = self._client().update_item(
                    TableName=self._table,
                    Key={TABLE_PARTITION_KEY: {"S": key}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=expression_names,
                    ReturnValues="NONE",
                )
        return response.get("Attributes", {})


def _seconds(value: float) -> AttributeValueTypeDef:
    """Epoch seconds (or a duration) with microseconds: one unit in every limit item."""
    return {"N": f"{value:.6f}"}


def _number(item: Mapping[str, AttributeValueTypeDef] | None, name: str) -> float | None:
    value = item.get(name) if item else None
    if value is None or "N" not in value:
        return None
    return float(Decimal(value["N"]))


def _holders(item: Mapping[str, AttributeValueTypeDef]) -> dict[str, float]:
    """The leases of a concurrency item, token → end.

    Raises:
        IdempotencyStoreError: the item's holders are not a map of numbers.
    """
    raw = item["holders"].get("M")
    if raw is None:
        raise IdempotencyStoreError("concurrency item without a map of holders", key=None)
    return {token: float(Decimal(value["N"])) for token, value in raw.items() if "N" in value}
