"""Enqueueing a unique job: reserve, send, confirm.

::

    reserve ─┬─ Reserved ──▶ send ──▶ confirm ──▶ the new job's id
             │                 └─ raised ──▶ release (the next enqueue takes over at once) ──▶ re-raise
             └─ Held ─┬─ lapsed or released ──▶ take over (same job id) ──▶ send ──▶ confirm
                      ├─ sent, unique_until="finished", its record finished ──▶ reserve(replacing) ──▶ …
                      └─ otherwise ──▶ its job id, nothing sent

The reservation is written before the message exists, so a crash after the write and before the
send leaves a reservation that is never confirmed; it lapses after the reservation timeout, and the
next enqueue of the key takes it over and sends the job. A crash after the send and before the
confirm leads to the same takeover: the job is then sent twice under one job id (see
:mod:`cloudjobs.uniqueness.state` for what that means on each queue type).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from pydantic import JsonValue

from cloudjobs.envelope import MAX_IDEMPOTENCY_KEY_LENGTH as MAX_UNIQUE_KEY_LENGTH
from cloudjobs.errors import IdempotencyError, InvalidUniquenessError
from cloudjobs.idempotency.base import DEFAULT_CLOCK_SKEW, RecordReader, Status, payload_hash
from cloudjobs.uniqueness.state import (
    MAX_UNIQUE_WINDOW,
    MIN_UNIQUE_WINDOW,
    Held,
    ReservationState,
    Reserved,
    ReserveResult,
    UniqueClaim,
    UniquenessStore,
    UniqueUntil,
    unique_item_key,
)

logger = logging.getLogger("cloudjobs.producer")

_TURNS: Final = 3
"""Writes an enqueue makes on a key before it settles for the holder it last saw: each refused write
returns the reservation as it is, so a turn is lost only to a concurrent takeover."""
_FINISHED: Final = frozenset({Status.COMPLETED, Status.DEAD_LETTERED, Status.CANCELLED})


@dataclass(frozen=True, slots=True)
class Uniqueness:
    """What a unique enqueue asks for: one job per ``key`` of its job type within ``window``.

    Attributes:
        key: the unique key (the caller's, or a hash of the payload).
        window: how long the key stays taken.
        until: when the key is free again (see :class:`UniqueUntil`).
    """

    key: str
    window: timedelta
    until: UniqueUntil


def uniqueness_of(
    job_type: str,
    payload: JsonValue,
    *,
    unique_for: timedelta | float | None,
    unique_key: str | None,
    unique_until: UniqueUntil | str | None,
) -> Uniqueness | None:
    """The uniqueness an enqueue asks for, or None for an ordinary job.

    Without ``unique_key`` the key is a SHA-256 of the job type and payload (equal payloads are one
    job); ``unique_key`` or ``unique_until`` without ``unique_for`` is refused (a key is taken for a
    stated time, never for ever).

    Raises:
        InvalidUniquenessError: as above, or a window outside 1 s – 366 days, an empty key or one
            longer than 1,024 characters, an unknown ``unique_until``.
    """
    if unique_for is None:
        if unique_key is not None or unique_until is not None:
            setting = "unique_key" if unique_key is not None else "unique_until"
            raise InvalidUniquenessError(
                f"{setting} needs unique_for, the window the key stays taken",
                job_name=job_type,
                setting="unique_for",
            )
        return None
    if isinstance(unique_for, bool) or not isinstance(unique_for, timedelta | int | float):
        raise InvalidUniquenessError(
            f"unique_for takes seconds or a timedelta, not {type(unique_for).__name__}",
            job_name=job_type,
            setting="unique_for",
        )
    window = unique_for if isinstance(unique_for, timedelta) else timedelta(seconds=unique_for)
    if not MIN_UNIQUE_WINDOW <= window <= MAX_UNIQUE_WINDOW:
        raise InvalidUniquenessError(
            f"unique_for of {window.total_seconds():g}s is outside 1 s – {MAX_UNIQUE_WINDOW.days} days",
            job_name=job_type,
            setting="unique_for",
        )
    if unique_key is not None and not 0 < len(unique_key) <= MAX_UNIQUE_KEY_LENGTH:
        raise InvalidUniquenessError(
            f"unique_key must be 1 to {MAX_UNIQUE_KEY_LENGTH} characters",
            job_name=job_type,
            setting="unique_key",
        )
    try:
        until = UniqueUntil(unique_until) if unique_until is not None else UniqueUntil.WINDOW
    except ValueError:
        choices = ", ".join(repr(member.value) for member in UniqueUntil)
        raise InvalidUniquenessError(
            f"unique_until is {unique_until!r}; choose one of {choices}",
            job_name=job_type,
            setting="unique_until",
        ) from None
    if unique_key is None:
        try:
            unique_key = "payload:" + payload_hash(job_type, payload)
        except ValueError as exc:  # NaN, infinities or lone surrogates: no canonical JSON to hash
            raise InvalidUniquenessError(
                f"the payload cannot be hashed into a key ({exc}); give a unique_key",
                job_name=job_type,
                setting="unique_key",
            ) from None
    return Uniqueness(key=unique_key, window=window, until=until)


def enqueue_unique(
    uniqueness: Uniqueness,
    *,
    job_type: str,
    job_id: str,
    store: UniquenessStore,
    records: Callable[[], RecordReader | None],
    send: Callable[[str], str],
    record_key: Callable[[str], str | None],
    reservation: timedelta,
    now: Callable[[], datetime],
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> tuple[str, Held | None]:
    """Enqueue one unique job: reserve its key, send it, confirm (see the module docstring).

    Args:
        uniqueness: the key, window and rule.
        job_type: the job's type (the key is per type).
        job_id: the id a new job gets.
        store: where reservations are.
        records: the store that reads status records by key (``unique_until="finished"``).
        send: sends the job under the id it is given; returns that id.
        record_key: the store key of the status record the job keeps under an id (None: none).
        reservation: how long a reservation may stand unconfirmed.
        now: the clock reservations are compared with (the store's).
        clock_skew: how long after its timeout a reservation counts as lapsed.

    Returns:
        The job id of the window, and the reservation that held it when nothing was sent (None when
        this call sent the job).

    Raises:
        IdempotencyStoreError: the store could not be reached (nothing was sent).
        Whatever ``send`` raises (the reservation is released first).
    """
    claim = UniqueClaim(
        key=unique_item_key(job_type, uniqueness.key),
        job_id=job_id,
        job_type=job_type,
        window=uniqueness.window,
        reservation=reservation,
        record_key=record_key(job_id),
    )
    answer: ReserveResult = store.reserve(claim)
    for _ in range(_TURNS):
        if isinstance(answer, Reserved):
            break
        if answer.is_lapsed(now(), clock_skew=clock_skew):
            logger.info("unique job %s: taking over a reservation never confirmed", answer.job_id)
            seen = answer
            answer = store.take_over(
                replace(claim, job_id=seen.job_id, record_key=record_key(seen.job_id)), seen
            )
            if isinstance(answer, Held) and answer.token == seen.token and answer.state is seen.state:
                return answer.job_id, answer  # not lapsed by the store's allowance for clock skew yet
        elif uniqueness.until is UniqueUntil.FINISHED and _has_finished(answer, records()):
            answer = store.reserve(claim, replacing=answer.job_id)
        else:
            return answer.job_id, answer
    if not isinstance(answer, Reserved):
        return answer.job_id, answer
    try:
        send(answer.job_id)
    except BaseException:
        _release(store, claim.key, answer.token)
        raise
    if not store.confirm_reservation(claim.key, answer.token):
        # Slower than the reservation timeout: another enqueue took over and sent this job id too.
        logger.warning(
            "unique job %s: sent after its reservation lapsed; it may have been sent twice", answer.job_id
        )
    return answer.job_id, None


def _has_finished(held: Held, records: RecordReader | None) -> bool:
    """True when the held job was sent and its status record says it finished (or is gone)."""
    if held.state is not ReservationState.SENT or held.record_key is None or records is None:
        return False
    record = records.get_record(held.record_key)
    return record is None or record.status in _FINISHED


def _release(store: UniquenessStore, key: str, token: str) -> None:
    try:
        store.release_reservation(key, token)
    except IdempotencyError as exc:
        # The reservation lapses by itself; the send's own error is what the caller must see.
        logger.warning("releasing the reservation of %r failed: %s", key, exc)
