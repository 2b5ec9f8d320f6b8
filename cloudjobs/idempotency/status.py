"""JobStatus: what ``jobs.status(job_id)`` tells a producer, read from the job's idempotency record."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import JsonValue

from cloudjobs.idempotency.base import (
    DEFAULT_CLOCK_SKEW,
    IdempotencyStore,
    JobControlStore,
    Record,
    Status,
    decode_result,
    lapse_after,
)


class JobState(enum.Enum):
    """A job's state as seen through its record; one state machine for every job::

        scheduled ──▶ pending ──▶ running ──┬──▶ succeeded
                     ▲        ├──▶ retrying ──▶ running …
                     │        ├──▶ failed (in the dead-letter queue; a redrive makes it retrying)
                     │        └──▶ cancelled (a cancellation the handler saw, see ``job.cancelled``)
        pending / retrying ──────▶ cancelled (``jobs.cancel``: never runs again)

    ``COMPLETED`` and ``DEAD_LETTERED`` are aliases of ``SUCCEEDED`` and ``FAILED`` (their old names).
    Here *failed* means in the dead-letter queue (a record's ``Status.DEAD_LETTERED``); a record's
    ``Status.RETRYING`` (stored as ``"failed"``) reads as ``RETRYING``.
    """

    SCHEDULED = "scheduled"
    """Enqueued with status tracking on and a delay past 15 minutes; not due yet (``due_at``)."""
    PENDING = "pending"
    """Enqueued with status tracking on; no attempt has started."""
    RUNNING = "running"
    """A worker holds the lease."""
    RETRYING = "retrying"
    """An attempt failed (or its worker died) and the job waits for its next attempt."""
    SUCCEEDED = "succeeded"
    """The handler returned; the result is stored."""
    FAILED = "failed"
    """The job went to the dead-letter queue."""
    CANCELLED = "cancelled"
    """Cancelled with ``jobs.cancel``: it will not run (again)."""
    COMPLETED = "succeeded"
    DEAD_LETTERED = "failed"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's status and result.

    Attributes:
        job_id: the job (the first one that used its idempotency key).
        job_type: its type (empty for a job known only by its cancellation marker).
        state: pending, running, retrying, succeeded, failed or cancelled.
        attempts: attempts started so far.
        progress: the last percentage the handler reported (100 once completed), or None.
        result: the stored result as JSON values (None when there is none, or it was not stored).
        result_omitted: why a completed job's result was not stored (over the size limit, not JSON).
        error: the last failed attempt's error.
        created_at: when the first attempt started.
        updated_at: the record's last change.
        expires_at: when the record is forgotten.
        is_cancel_requested: ``jobs.cancel`` asked the running job to stop (``job.cancelled``).
        due_at: when a job delayed past 15 minutes is due (None for others).
        correlation_id: the job's correlation id, when its record keeps it.
        trace_id: the W3C trace id (32 hex digits) of the job's trace, when its message carried one.
    """

    job_id: str
    job_type: str
    state: JobState
    attempts: int
    progress: int | None
    result: JsonValue
    result_omitted: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    is_cancel_requested: bool = False
    due_at: datetime | None = None
    correlation_id: str | None = None
    trace_id: str | None = None

    @property
    def is_finished(self) -> bool:
        """True when the job will not run again by itself (succeeded, failed or cancelled)."""
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def status_of(record: Record, *, now: datetime, clock_skew: timedelta) -> JobStatus:
    """The status a record describes at ``now`` (a lapsed lease reads as retrying)."""
    match record.status:
        case Status.PENDING:
            # Stored as pending, read as scheduled until due: older workers know only "pending".
            is_due = record.due_at is None or record.due_at <= now
            state = JobState.PENDING if is_due else JobState.SCHEDULED
        case Status.CANCELLED:
            state = JobState.CANCELLED
        case Status.COMPLETED:
            state = JobState.SUCCEEDED
        case Status.DEAD_LETTERED:
            state = JobState.FAILED
        case Status.RETRYING:
            state = JobState.RETRYING
        case Status.IN_PROGRESS:
            lease_end = record.lease_expires_at or record.updated_at
            is_lapsed = lapse_after(lease_end, clock_skew=clock_skew) < now
            state = JobState.RETRYING if is_lapsed else JobState.RUNNING
            if is_lapsed and record.cancel_requested_at is not None:
                state = JobState.CANCELLED  # its worker died after the request: it never runs again
    return JobStatus(
        job_id=record.job_id,
        job_type=record.job_type,
        state=state,
        attempts=record.attempts,
        progress=record.progress,
        result=decode_result(record.result),
        result_omitted=record.result_omitted,
        error=record.error,
        created_at=record.created_at,
        updated_at=record.updated_at,
        expires_at=record.expires_at,
        is_cancel_requested=record.cancel_requested_at is not None,
        due_at=record.due_at,
        correlation_id=record.correlation_id,
        trace_id=record.trace_id,
    )


def cancelled_by_marker(job_id: str, *, expires_at: datetime, retention: timedelta) -> JobStatus:
    """The status of a job known only by its cancellation marker: cancelled, type unknown (empty)."""
    marked_at = expires_at - retention
    return JobStatus(
        job_id=job_id,
        job_type="",
        state=JobState.CANCELLED,
        attempts=0,
        progress=None,
        result=None,
        result_omitted=None,
        error=None,
        created_at=marked_at,
        updated_at=marked_at,
        expires_at=expires_at,
    )


def find_status(
    store: IdempotencyStore, job_id: str, *, now: datetime, retention: timedelta
) -> JobStatus | None:
    """A job's status from its record, else the record an alias points it at, else its cancellation
    marker; None when there is none (see :meth:`cloudjobs.CloudJobs.status` for the requests).

    Raises:
        IdempotencyStoreError: the store could not be reached.
    """
    record = store.find(job_id)
    if record is not None:
        return status_of(record, now=now, clock_skew=DEFAULT_CLOCK_SKEW)
    if isinstance(store, JobControlStore):
        # A duplicate enqueued under a live record's key was pointed at it (status tracking).
        record = store.find_through_alias(job_id)
        if record is not None:
            return status_of(record, now=now, clock_skew=DEFAULT_CLOCK_SKEW)
        # No record: a cancellation marker still tells that the job will not run.
        expires_at = store.cancel_marker_expiry(job_id)
        if expires_at is not None:
            return cancelled_by_marker(job_id, expires_at=expires_at, retention=retention)
    return None
