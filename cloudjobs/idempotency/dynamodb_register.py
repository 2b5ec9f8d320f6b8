"""The cancellation register: one item that lists the live cancellation markers, so consumers learn of
them with one read per refresh interval instead of one read per received batch.

``jobs.cancel(job_id)`` for a job without a record writes a marker under the job id (see
:mod:`cloudjobs.idempotency.dynamodb_control`), adds the id to this item, and returns only once a
refresh interval and a margin have passed. A consumer reads the item (strongly consistent) when a
batch arrives and its last read is older than the refresh interval, and checks the batch's jobs
against it without another request; an idle consumer reads nothing. A read counts from the moment it
was sent, so a batch received after ``cancel`` returned is checked against a read sent after the id
was added: the job is not run, as when each batch's markers were read.

The item stays small: an entry is the job id and its marker's expiry, the next cancellation removes
expired entries, and past ``max_entries`` live entries none are added: the item then says until when
it is incomplete (the latest expiry of a marker left out), and until then consumers read the markers
of each batch instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.idempotency.dynamodb_items import (
    ConditionFailedError,
    time_of,
    ttl_value,
    utc_now,
    wrap_dynamodb_errors,
)
from cloudjobs.idempotency.dynamodb_schema import TABLE_PARTITION_KEY

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, UpdateItemInputTypeDef

REGISTER_KEY: Final = "#cancellations"
"""The register's key: never a record's (those start with a job type), a marker's (``#cancelled#``)
or an alias's (``#alias#``)."""

DEFAULT_REFRESH: Final = timedelta(seconds=1)
"""How old a consumer's read of the register may be when it checks a batch."""

DEFAULT_MAX_ENTRIES: Final = 1_000
"""Live entries the register holds (~45 KB with 36-character ids: 12 read units a read)."""

MARGIN: Final = timedelta(milliseconds=250)
"""Added to the refresh interval in what ``cancel`` waits: for the rates of two machines' clocks and
the scheduling of the threads that read them."""

_ENTRY_PREFIX: Final = "j#"
_INCOMPLETE_UNTIL: Final = "incomplete_until"
_MAX_REMOVED: Final = 100
"""Expired entries one cancellation removes (an update expression holds at most 4 KB)."""


@dataclass(frozen=True, slots=True)
class _Reading:
    """One read of the register: when it was sent (``time.monotonic()``), and its live entries by job
    id with their expiry (None while the register is incomplete)."""

    sent_at: float
    entries: Mapping[str, datetime] | None


class CancellationRegister:
    """The register item on the idempotency table (see the module docstring).

    Args:
        table: the table's name.
        client: gives the DynamoDB client.
        refresh: how old a read may be when a batch is checked; every process that cancels or
            consumes on the table must use the same (``cancel`` waits it out).
        max_entries: live entries kept before the register turns incomplete.
        sleep: waits out the refresh interval in :meth:`wait_out` (tests record it).
    """

    def __init__(
        self,
        table: str,
        *,
        client: Callable[[], DynamoDBClient],
        refresh: timedelta = DEFAULT_REFRESH,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._client = client
        self._refresh = refresh.total_seconds()
        self._propagation = (refresh + MARGIN).total_seconds()
        self._max_entries = max_entries
        self._sleep = sleep
        self._lock = threading.Lock()
        self._reading: _Reading | None = None

    def add(self, job_id: str, expires_at: datetime) -> None:
        """Enter ``job_id``'s marker, removing expired entries: one strongly consistent GetItem and
        one UpdateItem. Past ``max_entries`` live entries, mark the register incomplete instead."""
        live, expired = _entries(self._get(), utc_now())
        names: dict[str, str] = {}
        values: dict[str, AttributeValueTypeDef] = {}
        condition: str | None = None
        if job_id in live or len(live) < self._max_entries:
            names["#entry"] = _ENTRY_PREFIX + job_id
            values[":expires_at"] = ttl_value(expires_at)
            update = "SET #entry = :expires_at"
        else:
            names["#incomplete"] = _INCOMPLETE_UNTIL
            values[":until"] = ttl_value(expires_at)
            update = "SET #incomplete = :until"
            # Never moves the date back: a later marker left out keeps the register incomplete longer.
            condition = "attribute_not_exists(#incomplete) OR #incomplete < :until"
        removed = [f"#expired{index}" for index in range(min(len(expired), _MAX_REMOVED))]
        names.update(zip(removed, expired, strict=False))
        if removed:
            update += " REMOVE " + ", ".join(removed)
        request: UpdateItemInputTypeDef = {
            "TableName": self._table,
            "Key": {TABLE_PARTITION_KEY: {"S": REGISTER_KEY}},
            "UpdateExpression": update,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if condition is not None:
            request["ConditionExpression"] = condition
        try:
            with wrap_dynamodb_errors(self._table, REGISTER_KEY):
                self._client().update_item(**request)
        except ConditionFailedError:
            pass  # incomplete until later already

    def wait_out(self) -> None:
        """Return once every consumer's read of the register is newer than the last :meth:`add`."""
        self._sleep(self._propagation)

    def marked(self, job_ids: Collection[str]) -> set[str] | None:
        """The ids among ``job_ids`` the register lists, from a read at most one refresh interval old
        (one strongly consistent GetItem when the last is older); None while it is incomplete.

        Raises:
            IdempotencyStoreError: the register could not be read.
        """
        entries = self._recent().entries
        if entries is None:
            return None
        now = utc_now()
        return {job_id for job_id in job_ids if (expiry := entries.get(job_id)) is not None and expiry >= now}

    def _recent(self) -> _Reading:
        if (reading := self._fresh()) is not None:
            return reading
        with self._lock:
            # Threads that found it stale together read it once.
            if (reading := self._fresh()) is not None:
                return reading
            sent_at = time.monotonic()
            reading = self._reading = _Reading(sent_at, _live_entries(self._get()))
            return reading

    def _fresh(self) -> _Reading | None:
        """The last read, if it was sent less than a refresh interval ago."""
        reading = self._reading
        return reading if reading is not None and time.monotonic() - reading.sent_at < self._refresh else None

    def _get(self) -> Mapping[str, AttributeValueTypeDef]:
        with wrap_dynamodb_errors(self._table, REGISTER_KEY):
            response = self._client().get_item(
                TableName=self._table, Key={TABLE_PARTITION_KEY: {"S": REGISTER_KEY}}, ConsistentRead=True
            )
        return response.get("Item", {})


def _live_entries(item: Mapping[str, AttributeValueTypeDef]) -> dict[str, datetime] | None:
    """The register's live entries by job id, or None while it is incomplete."""
    now = utc_now()
    incomplete_until = time_of(item.get(_INCOMPLETE_UNTIL))
    if incomplete_until is not None and incomplete_until >= now:
        return None
    return _entries(item, now)[0]


def _entries(
    item: Mapping[str, AttributeValueTypeDef], now: datetime
) -> tuple[dict[str, datetime], list[str]]:
    """The register's live entries (expiry by job id) and the attribute names of its expired ones."""
    live: dict[str, datetime] = {}
    expired: list[str] = []
    for name, value in item.items():
        if name.startswith(_ENTRY_PREFIX):
            if (expiry := time_of(value)) is not None and expiry >= now:
                live[name[len(_ENTRY_PREFIX) :]] = expiry
            else:
                expired.append(name)
    return live, expired
