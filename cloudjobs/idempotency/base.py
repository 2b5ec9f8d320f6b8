"""The idempotency store protocol, its record, and the values its methods return.

A store holds one record per idempotency key. Its lifecycle::

    (absent) ─put_pending─▶ pending ──acquire──┐
    (absent) ──────────────────acquire─────────▶ in_progress ──complete──▶ completed
                                                   │   ▲  │
                                           release │   │  └─ lease lapses (worker killed): taken over
                                                   ▼   │
                      retrying / dead_lettered ──acquire (a retry, or a redrive from the DLQ)──┘

    pending / retrying / lapsed in_progress ──cancel──▶ cancelled (acquire refuses it: never runs)
    live in_progress ──cancel──▶ in_progress + cancel_requested_at ──finish_cancelled──▶ cancelled

``acquire`` is the only call on a duplicate's path, and it decides everything from the one
conditional write: a new lease (:class:`Acquired`), a lease held elsewhere (:class:`InProgress`), a
stored result (:class:`AlreadyCompleted`), a key reused with another payload
(:class:`PayloadMismatch`), or a job someone asked to cancel (:class:`CancelRequested`). Times are
timezone-aware UTC; durations are timedeltas.

One word per meaning, in this package and in what it reports:

- *cancel* (a request): ``jobs.cancel(job_id)``. On a running job it is recorded as
  ``cancel_requested_at`` (:attr:`CancelOutcome.REQUESTED`; the handler sees ``job.cancelled``);
  on a job without a record it is a marker (:attr:`CancelOutcome.MARKED`). ``acquire`` refuses any
  job with a request against it: :class:`CancelRequested`.
- *cancelled* (a state): the job will not run (again): :attr:`Status.CANCELLED`,
  :attr:`JobState.CANCELLED <cloudjobs.idempotency.status.JobState.CANCELLED>`, and
  :attr:`CancelOutcome.CANCELLED` when the request put it there at once. The consumer's
  ``Cancelled`` outcome is how a delivery of such a job is settled.
- *retrying*: an attempt failed and released its lease; the job waits for its next attempt
  (:attr:`Status.RETRYING`, stored as ``"failed"``, the value it was first written with).
- *dead-lettered*: the job went to the dead-letter queue (:attr:`Status.DEAD_LETTERED`); a job's
  public state calls it *failed* (:attr:`JobState.FAILED <cloudjobs.idempotency.status.JobState.FAILED>`),
  and that is the only meaning of "failed" in a job's state.
- *finished*: the job will not run again by itself: completed, dead-lettered or cancelled.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from pydantic import JsonValue
from pydantic_core import PydanticSerializationError, to_json

DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=2)
"""How far apart writers' clocks may be: a lease counts as lapsed only this long after its expiry."""
DEFAULT_RETENTION: Final = timedelta(days=7)
"""How long a record is kept after its last write (DynamoDB TTL, and checked on every read)."""
MAX_RESULT_BYTES: Final = 64 * 1024
"""The largest result stored by default: its JSON, UTF-8 encoded. Larger results are not stored."""
RESULT_BYTES_CEILING: Final = 350_000
"""The most ``max_result_bytes`` may be: a DynamoDB item holds at most 400 KB, attributes included.
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html"""


class Status(enum.Enum):
    """Where a record is in its lifecycle (stored as the value)."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    RETRYING = "failed"
    """The last attempt failed and will be retried; the lease is released. Stored as ``"failed"``,
    the value existing tables hold."""
    FAILED = "failed"
    """The old name of :attr:`RETRYING` (an alias: the same member)."""
    DEAD_LETTERED = "dead_lettered"
    """The job went to the dead-letter queue; a redrive may still run it again."""
    PENDING = "pending"
    """Written by the producer at enqueue (status tracking on); no attempt has started."""
    CANCELLED = "cancelled"
    """Cancelled by ``jobs.cancel``: no lease is granted on it again."""


@dataclass(frozen=True, slots=True)
class Record:
    """One idempotency (and status) record.

    Attributes:
        key: the store's key (the job type and the idempotency key).
        job_id: the job that first used the key.
        job_type: the job's type.
        status: where the record is in its lifecycle.
        payload_hash: the hash of the job type and payload that first used the key.
        attempts: how many leases were taken on it (attempts started).
        created_at: the first write.
        updated_at: the last write.
        expires_at: when the record stops counting (DynamoDB TTL deletes it some time after).
        lease_expires_at: while in progress: when the lease ends unless renewed.
        progress: the last progress reported by the handler, 0–100.
        result: the handler's result as JSON text, when completed and stored.
        result_omitted: why a completed job's result was not stored (too large, not JSON).
        error: the last failed attempt's error.
        cancel_requested_at: when ``jobs.cancel`` asked a running job to stop (None otherwise).
        due_at: when a job delayed past 15 minutes is due (written with its pending record).
        correlation_id: the job's correlation id (from its first pending record or lease).
        trace_id: the W3C trace id the job's message carried (32 hex digits), when it carried one.
    """

    key: str
    job_id: str
    job_type: str
    status: Status
    payload_hash: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    lease_expires_at: datetime | None = None
    progress: int | None = None
    result: str | None = None
    result_omitted: str | None = None
    error: str | None = None
    cancel_requested_at: datetime | None = None
    due_at: datetime | None = None
    correlation_id: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class Acquired:
    """The lease is ours until ``lease_expires_at``; ``token`` proves it in later calls."""

    token: str
    lease_expires_at: datetime


@dataclass(frozen=True, slots=True)
class InProgress:
    """Another holder has the lease; it counts as lapsed only after ``available_at``."""

    job_id: str
    available_at: datetime


@dataclass(frozen=True, slots=True)
class AlreadyCompleted:
    """The key's job completed; ``result`` is its stored JSON (None when none was stored)."""

    job_id: str
    result: str | None
    result_omitted: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadMismatch:
    """The key is held by a job with another payload (the key was reused)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """Someone asked to cancel the key's job (``jobs.cancel``): its record is cancelled, or a request
    to stop stands against it. It must not run."""

    job_id: str


AlreadyCancelled = CancelRequested
"""The old name of :class:`CancelRequested` (the same class)."""

AcquireResult = Acquired | InProgress | AlreadyCompleted | PayloadMismatch | CancelRequested
"""Everything :meth:`IdempotencyStore.acquire` can answer."""


def standing_refusal(
    record: Record, claim: Claim
) -> PayloadMismatch | CancelRequested | AlreadyCompleted | None:
    """What a live record answers ``claim`` whatever the state of its lease, or None when the lease
    alone decides. One order for every store: a reused key first, then cancellation, then completion."""
    if record.payload_hash != claim.payload_hash:
        return PayloadMismatch(job_id=record.job_id)
    if record.status is Status.CANCELLED or record.cancel_requested_at is not None:
        return CancelRequested(job_id=record.job_id)
    if record.status is Status.COMPLETED:
        return AlreadyCompleted(
            job_id=record.job_id, result=record.result, result_omitted=record.result_omitted
        )
    return None


@dataclass(frozen=True, slots=True)
class Claim:
    """What a consumer asks of :meth:`IdempotencyStore.acquire`.

    Attributes:
        key: the store's key (see :func:`store_key`).
        job_id: the job asking.
        job_type: its type.
        payload_hash: :func:`payload_hash` of its type and payload.
        due_at: when a job delayed past 15 minutes is due (pending records only).
        correlation_id: the job's correlation id, kept on the record (the first one written stays).
        trace_id: the W3C trace id of the job's message, kept on the record (the first one stays).
    """

    key: str
    job_id: str
    job_type: str
    payload_hash: str
    due_at: datetime | None = None
    correlation_id: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """The answer to :meth:`IdempotencyStore.renew`: the lease is extended.

    Attributes:
        is_cancel_requested: ``jobs.cancel`` asked the running job to stop (read from the same write).
    """

    is_cancel_requested: bool = False


class CancelOutcome(enum.Enum):
    """What :meth:`JobControlStore.cancel` did (the values are what ``cloudjobs cancel`` prints)."""

    CANCELLED = "cancelled"
    """The job's record now says cancelled: a job that has not started never runs."""
    REQUESTED = "requested"
    """The job is running: its handler sees ``job.cancelled`` become True at the next heartbeat."""
    MARKED = "marked"
    """No record was found: a cancellation marker was written, checked before jobs without a record run."""
    ALREADY_FINISHED = "already_finished"
    """The job had succeeded, failed (dead-lettered) or been cancelled already: nothing changed."""


@dataclass(frozen=True, slots=True)
class Cancellation:
    """The answer to a cancellation: what happened, and the record after it (None for a marker).

    ``schedule_deleted`` is True when the job waited in a one-time EventBridge Scheduler schedule
    (``CLOUDJOBS_LONG_DELAYS=eventbridge``) that the cancellation deleted: it is never sent.
    """

    outcome: CancelOutcome
    record: Record | None = None
    schedule_deleted: bool = False


class IdempotencyStore(Protocol):
    """Records keyed by idempotency key, taken with leases; every method may raise
    :class:`~cloudjobs.errors.IdempotencyStoreError` (the store is unreachable or refused)."""

    def acquire(self, claim: Claim, *, lease: timedelta, retention: timedelta) -> AcquireResult:
        """Take the lease on ``claim.key``: succeeds when the record is absent, expired, released
        (retrying, dead-lettered) or its lease lapsed; otherwise says why not. One write, no read."""
        ...

    def renew(self, key: str, token: str, *, lease: timedelta, progress: int | None = None) -> Renewal:
        """Extend a held lease to ``lease`` from now (and record ``progress``); the answer says whether
        a cancellation was requested meanwhile (no extra read).

        Raises:
            LeaseLostError: the token no longer holds the record.
        """
        ...

    def complete(
        self, key: str, token: str, *, result: str | None, result_omitted: str | None, retention: timedelta
    ) -> None:
        """Mark the record completed with the result's JSON, kept for ``retention``.

        Raises:
            LeaseLostError: the token no longer holds the record.
        """
        ...

    def release(self, key: str, token: str, *, error: str, is_final: bool) -> None:
        """Give the lease up after a failed attempt (``is_final``: the job was dead-lettered).

        Raises:
            LeaseLostError: the token no longer holds the record.
        """
        ...

    def find(self, job_id: str) -> Record | None:
        """The live record of a job by its id, or None (eventually consistent on DynamoDB)."""
        ...


@runtime_checkable
class JobControlStore(Protocol):
    """The producer's and operator's side of a store: pending records and cancellation.

    A second protocol beside :class:`IdempotencyStore`, so a consumer never depends on it. Every
    method may raise :class:`~cloudjobs.errors.IdempotencyStoreError`.
    """

    def put_pending(self, claim: Claim, *, retention: timedelta) -> bool:
        """Write a ``pending`` record unless a live one exists (never overwrites); True if written.

        When a live record of another job holds the key, the claim's job id is pointed at it (an
        alias), so that :meth:`find_through_alias` answers for the duplicate.
        """
        ...

    def find_through_alias(self, job_id: str) -> Record | None:
        """The record a duplicate job was pointed at by :meth:`put_pending`, or None (two strongly
        consistent reads on DynamoDB when there is one, one when there is not)."""
        ...

    def cancel(self, job_id: str, *, retention: timedelta) -> Cancellation:
        """Cancel a job by id: its record when one is found, else a marker (see :class:`CancelOutcome`)."""
        ...

    def is_marked_cancelled(self, job_id: str) -> bool:
        """True when a cancellation marker exists for ``job_id`` (one strongly consistent read)."""
        ...

    def cancel_marker_expiry(self, job_id: str) -> datetime | None:
        """When ``job_id``'s live cancellation marker expires, or None without one (one read)."""
        ...

    def marked_cancelled(self, job_ids: Collection[str]) -> set[str]:
        """The ids among ``job_ids`` that carry a live cancellation marker (strongly consistent; on
        DynamoDB one BatchGetItem per hundred ids)."""
        ...

    def finish_cancelled(self, key: str, token: str) -> None:
        """Settle a held lease as cancelled (the run ended after a cancellation was requested).

        Raises:
            LeaseLostError: the token no longer holds the record.
        """
        ...


@runtime_checkable
class RecordReader(Protocol):
    """Reading one record by its store key: what ``jobs.result`` polls, and what a unique enqueue
    with ``unique_until="finished"`` reads of the first job. May raise
    :class:`~cloudjobs.errors.IdempotencyStoreError`."""

    def get_record(self, key: str) -> Record | None:
        """The live record under ``key``, or None (one strongly consistent GetItem on DynamoDB)."""
        ...


def alias_key(job_id: str) -> str:
    """The key of the item that points a duplicate job (refused by a live record under its
    idempotency key) at that record (never a :func:`store_key`: ``#`` starts no job type)."""
    return f"#alias#{job_id}"


def cancel_marker_key(job_id: str) -> str:
    """The key of the cancellation marker of a job that has no record (never a :func:`store_key`:
    those start with a job type, and markers with a ``#``)."""
    return f"#cancelled#{job_id}"


def store_key(job_type: str, key: str) -> str:
    """The store's key: keys are per job type, so ``charge`` and ``refund`` may both use ``order-42``."""
    return f"{job_type}#{key}"


def payload_hash(job_type: str, payload: JsonValue) -> str:
    """A SHA-256 of the job type and the payload's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(
        [job_type, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class EncodedResult:
    """A handler's result as stored: its JSON, or why it was not stored."""

    json: str | None
    omitted: str | None = None


def encode_result(result: object, *, max_bytes: int = MAX_RESULT_BYTES) -> EncodedResult:
    """Serialise a result to JSON for the store, following the size rule.

    The rule: a result whose JSON (UTF-8) is at most ``max_bytes`` is stored whole; a larger one, or
    one that is not JSON-serialisable, is not stored at all (never truncated), and ``omitted`` says
    why. Pydantic models, dataclasses and datetimes serialise as pydantic serialises them.
    """
    if result is None:
        return EncodedResult(json=None)
    try:
        encoded = to_json(result)
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        return EncodedResult(json=None, omitted=f"not JSON-serialisable: {exc}")
    if len(encoded) > max_bytes:
        return EncodedResult(
            json=None, omitted=f"{len(encoded)} bytes of JSON, over the {max_bytes}-byte limit"
        )
    return EncodedResult(json=encoded.decode("utf-8"))


def decode_result(stored: str | None) -> JsonValue:
    """A stored result back as JSON values (None when none was stored)."""
    if stored is None:
        return None
    decoded: JsonValue = json.loads(stored)
    return decoded


def lapse_after(lease_expires_at: datetime, *, clock_skew: timedelta) -> datetime:
    """When a lease ending at ``lease_expires_at`` (by its holder's clock) may be taken over."""
    return lease_expires_at + clock_skew
