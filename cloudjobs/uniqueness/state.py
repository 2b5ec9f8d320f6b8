"""The uniqueness store protocol: one reservation per (job type, unique key), taken by a conditional
write, and what its writes answer.

A reservation's life::

    (absent, or its window over) ──reserve──▶ reserved ──confirm_reservation (the job was sent)──▶ sent
    reserved ──release_reservation (the send failed)──▶ released
    reserved, lapsed (its producer died) · released ──take_over──▶ reserved (same job id)
    sent, first job finished (unique_until="finished") ──reserve(replacing=…)──▶ reserved (new job id)

Within its window a reservation answers every other enqueue with its job id (:class:`Held`): nothing
is sent. A reservation that is never confirmed (the producer crashed between the write and the send)
lapses after its reservation timeout, and the next enqueue takes it over and sends the job *under the
same job id*: a message the dead producer did send is then a duplicate by job id (dropped by SQS's
deduplication on FIFO queues, where the job id is the deduplication id; run once by an idempotent
job, whose key is the job id).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

DEFAULT_RESERVATION_TIMEOUT: Final = timedelta(seconds=30)
"""How long a reservation stands unconfirmed before another enqueue may take it over (the time a
send may take, SDK retries included). ``CLOUDJOBS_UNIQUE_RESERVATION_SECONDS`` sets it."""
MAX_UNIQUE_WINDOW: Final = timedelta(days=366)
"""The longest ``unique_for``: as long as the longest delay."""
MIN_UNIQUE_WINDOW: Final = timedelta(seconds=1)
"""The shortest ``unique_for``."""


class UniqueUntil(enum.Enum):
    """When a unique job's key is free again."""

    WINDOW = "window"
    """At the end of ``unique_for``, whatever became of the job (the default)."""
    FINISHED = "finished"
    """When the first job finished (succeeded, failed into the DLQ, or was cancelled), or at the end
    of ``unique_for``, whichever comes first. The job keeps a status record to tell (it is enqueued
    with ``track_status=True``)."""


class ReservationState(enum.Enum):
    """Where a reservation is (stored as the value)."""

    RESERVED = "reserved"
    """Written; its producer is sending the job."""
    SENT = "sent"
    """Confirmed: the job is on the queue."""
    RELEASED = "released"
    """The send failed and said so: the next enqueue takes the reservation over at once."""


@dataclass(frozen=True, slots=True)
class UniqueClaim:
    """What an enqueue asks of :meth:`UniquenessStore.reserve`.

    Attributes:
        key: the store key (:func:`unique_item_key`).
        job_id: the job id the enqueue would send under.
        job_type: the job's type.
        window: how long the key stays taken from now.
        reservation: how long the reservation may stand unconfirmed.
        record_key: the store key of the job's status record (None when it keeps none): kept on the
            reservation, so a repeat learns where the first job's result is.
    """

    key: str
    job_id: str
    job_type: str
    window: timedelta
    reservation: timedelta
    record_key: str | None = None


@dataclass(frozen=True, slots=True)
class Reserved:
    """The reservation is this enqueue's: send ``job_id``, then confirm with ``token``.

    Attributes:
        is_takeover: the reservation was another producer's, never confirmed; ``job_id`` is its.
    """

    job_id: str
    token: str
    is_takeover: bool = False


@dataclass(frozen=True, slots=True)
class Held:
    """The key is taken: ``job_id`` is the job of the window.

    Attributes:
        state: reserved (being sent), sent, or released.
        token: the reservation's token while reserved or released (a takeover names it).
        reserved_until: while reserved: when it lapses, by its writer's clock.
        window_ends_at: when the key is free again.
        record_key: where the job's status record is (None when it keeps none).
    """

    job_id: str
    state: ReservationState
    token: str | None
    reserved_until: datetime | None
    window_ends_at: datetime
    record_key: str | None = None

    def is_lapsed(self, now: datetime, *, clock_skew: timedelta) -> bool:
        """True when another enqueue may take the reservation over: released, or reserved and not
        confirmed ``clock_skew`` past its timeout."""
        if self.state is ReservationState.RELEASED:
            return True
        return (
            self.state is ReservationState.RESERVED
            and self.reserved_until is not None
            and self.reserved_until + clock_skew < now
        )


ReserveResult = Reserved | Held
"""What :meth:`UniquenessStore.reserve` and :meth:`UniquenessStore.take_over` answer."""


@runtime_checkable
class UniquenessStore(Protocol):
    """Reservations of unique keys, by conditional writes. Every method may raise
    :class:`~cloudjobs.errors.IdempotencyStoreError` (the store is unreachable or refused).

    The memory and DynamoDB idempotency stores implement it (DynamoDB: the idempotency table, under
    the key ``#unique#<job type>#<unique key>``).
    """

    def reserve(self, claim: UniqueClaim, *, replacing: str | None = None) -> ReserveResult:
        """Reserve ``claim.key`` for ``claim.job_id`` when it is free (absent, or its window over),
        or, with ``replacing``, when it holds that job, sent. One conditional write.

        Returns:
            The reservation, or the key's holder as it is (another enqueue was first).
        """
        ...

    def take_over(self, claim: UniqueClaim, held: Held) -> ReserveResult:
        """Take over ``held``, a lapsed or released reservation, keeping its job id (``claim.job_id``
        should be it). One conditional write, on the held reservation's token.

        Returns:
            The reservation, or the holder as it is (another enqueue took it over first).
        """
        ...

    def confirm_reservation(self, key: str, token: str) -> bool:
        """Mark the reservation sent; False when ``token`` no longer holds it (taken over after it
        lapsed). One conditional write."""
        ...

    def release_reservation(self, key: str, token: str) -> None:
        """Give a reservation up after a send that failed, so the next enqueue takes it over at once;
        nothing when ``token`` no longer holds it. One conditional write."""
        ...


def unique_item_key(job_type: str, unique_key: str) -> str:
    """The store key of a unique key's reservation: per job type, and never a job record's key
    (``#`` starts no job type)."""
    return f"#unique#{job_type}#{unique_key}"
