"""Waiting for a job's result: what ``jobs.result(job_id, timeout=...)`` does.

A job has a result to wait for when it keeps a record: its type is registered with
``track_status=True`` or ``idempotent=True``, or it was enqueued with ``track_status=True``. The wait:

1. **Locate the record.** A job this process enqueued is remembered with its record's key (or
   with none: :class:`~cloudjobs.errors.JobNotTrackedError` at once), in a bounded map of the last
   :data:`REMEMBERED_JOBS` ids. Any other id is looked up on the store's job-id index (one Query on
   DynamoDB; the index is eventually consistent, so a record written a moment ago may not show: the
   lookup is repeated for up to :data:`DISCOVERY_GRACE` before the job counts as keeping no record),
   then through an alias (a duplicate pointed at the first job's record), then by its cancellation
   marker (:class:`~cloudjobs.errors.JobCancelledError`).
2. **Poll the record** by its key: one strongly consistent GetItem per poll on DynamoDB, the first at
   once, then after 0.1 s, 0.2 s, 0.4 s, 0.8 s and every second after that (:data:`MAX_POLL_INTERVAL`):
   about 5 requests in the first second and one per second of waiting after it. On the memory store
   a poll waits for the store's next write instead of sleeping.
3. **Answer** when the record is final: the stored result (JSON values; None when the handler
   returned nothing or its result was not stored, see ``JobStatus.result_omitted``), or
   :class:`~cloudjobs.errors.JobFailedError` (dead-lettered),
   :class:`~cloudjobs.errors.JobCancelledError` (cancelled), or
   :class:`~cloudjobs.errors.ResultTimeoutError` when ``timeout`` passes first.

A job enqueued under the idempotency key of an earlier one reads that one's record: its result is
the first job's (the handler ran once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from pydantic import JsonValue

from cloudjobs.errors import JobCancelledError, JobFailedError, JobNotTrackedError, ResultTimeoutError

# Every app remembers the jobs it enqueues (RememberedJobs); the store's records and statuses load
# when a result is first waited for, so a consumer (a Lambda cold start) never imports them.
if TYPE_CHECKING:
    from cloudjobs.envelope import Envelope
    from cloudjobs.idempotency.base import IdempotencyStore, Record
    from cloudjobs.idempotency.status import JobState, JobStatus

DEFAULT_RESULT_TIMEOUT: Final = timedelta(seconds=30)
"""How long ``jobs.result`` waits unless told."""
FIRST_POLL_INTERVAL: Final = 0.1
"""Seconds before the second poll; each later interval doubles, up to :data:`MAX_POLL_INTERVAL`."""
MAX_POLL_INTERVAL: Final = 1.0
"""Seconds between polls once the backoff reached it: one read per second of waiting."""
DISCOVERY_GRACE: Final = timedelta(seconds=2)
"""How long a job id this process did not enqueue is looked for on the job-id index before it counts
as keeping no record (the index lags the table by a fraction of a second, usually)."""
REMEMBERED_JOBS: Final = 10_000
"""Job ids this process enqueued whose record keys are remembered (the oldest are forgotten first)."""

_UNKNOWN: Final = object()

logger = logging.getLogger("cloudjobs.producer")


@runtime_checkable
class ChangeWaiter(Protocol):
    """A store whose readers can wait for its next write instead of polling (the memory store)."""

    def changes(self) -> int:
        """How many writes records have had."""
        ...

    def wait_for_change(self, seen: int, timeout: float) -> None:
        """Wait until a write after ``seen``, at most ``timeout`` seconds."""
        ...


class RememberedJobs:
    """The record keys of the jobs this process enqueued (None: the job keeps no record), bounded.

    Args:
        capacity: how many job ids are remembered; the oldest are forgotten first.
    """

    def __init__(self, capacity: int = REMEMBERED_JOBS) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, job_id: str, record_key: str | None) -> None:
        """Remember where ``job_id``'s record is (None: it keeps none)."""
        with self._lock:
            self._keys[job_id] = record_key
            self._keys.move_to_end(job_id)
            while len(self._keys) > self._capacity:
                self._keys.popitem(last=False)

    def remember_sent(
        self, envelopes: Sequence[Envelope], record_key: Callable[[Envelope], str | None]
    ) -> None:
        """Remember each envelope's record key; one whose key cannot be derived is left unknown."""
        for envelope in envelopes:
            try:
                key = record_key(envelope)
            except Exception as exc:  # a key function that raises is reported by the consumer
                logger.debug("job %s: record key not derived, not remembered: %s", envelope.id, exc)
                continue
            self.remember(envelope.id, key)

    def lookup(self, job_id: str) -> str | object | None:
        """The record key (None: no record), or :data:`_UNKNOWN` when the job is not remembered."""
        with self._lock:
            return self._keys.get(job_id, _UNKNOWN)


def wait_for_result(
    store: IdempotencyStore,
    job_id: str,
    *,
    timeout: timedelta,
    remembered: RememberedJobs,
    now: Callable[[], datetime],
    retention: timedelta,
) -> JsonValue:
    """Wait for the result of ``job_id`` (see the module docstring for the requests).

    Args:
        store: the idempotency store the job's record is in.
        job_id: the job.
        timeout: how long to wait (zero: read once, never wait).
        remembered: the record keys of the jobs this process enqueued.
        now: the clock records are judged by (a lease's lapse).
        retention: how long records are kept (a cancellation marker's time is derived from it).

    Raises:
        JobFailedError: the job is in the dead-letter queue.
        JobCancelledError: the job was cancelled.
        ResultTimeoutError: the job did not finish within ``timeout``.
        JobNotTrackedError: the job keeps no record.
        IdempotencyStoreError: the store could not be reached.
    """
    from cloudjobs.idempotency.base import DEFAULT_CLOCK_SKEW
    from cloudjobs.idempotency.status import JobState, status_of

    deadline = time.monotonic() + timeout.total_seconds()
    waiter = _Waiter(store, deadline)
    known = remembered.lookup(job_id)
    if known is None:
        raise JobNotTrackedError(
            job_id=job_id,
            reason="it was enqueued without a record (register its type with track_status=True or "
            "idempotent=True, or enqueue it with track_status=True)",
        )
    key = known if isinstance(known, str) else None
    # A memory store is consistent: what it does not hold now it will not show later.
    grace = 0.0 if isinstance(store, ChangeWaiter) else DISCOVERY_GRACE.total_seconds()
    discovery_ends = time.monotonic() + grace
    last_state: JobState | None = None
    while True:
        seen = waiter.mark()
        record = (
            _read(store, key) if key is not None else _locate(store, job_id, now=now, retention=retention)
        )
        if record is not None:
            key = record.key
            status = status_of(record, now=now(), clock_skew=DEFAULT_CLOCK_SKEW)
            if status.state is JobState.SUCCEEDED:
                return status.result
            _raise_if_final(status, job_id)
            last_state = status.state
        elif key is None and time.monotonic() >= discovery_ends:
            raise JobNotTrackedError(
                job_id=job_id,
                reason="no record or cancellation marker was found for it (its type keeps no record, "
                "the id is unknown, or its record was forgotten after its retention)",
            )
        if not waiter.wait(seen):
            raise ResultTimeoutError(
                job_id=job_id, timeout=timeout, state=last_state.value if last_state else None
            )


def _read(store: IdempotencyStore, key: str) -> Record | None:
    from cloudjobs.idempotency.base import RecordReader

    if isinstance(store, RecordReader):
        return store.get_record(key)
    return None


def _locate(
    store: IdempotencyStore, job_id: str, *, now: Callable[[], datetime], retention: timedelta
) -> Record | None:
    """The job's record found by its id (index, then alias), or None; raises JobCancelledError for a
    cancellation marker."""
    from cloudjobs.idempotency.base import JobControlStore

    record = store.find(job_id)
    if record is not None or not isinstance(store, JobControlStore):
        return record
    record = store.find_through_alias(job_id)
    if record is not None:
        return record
    if store.cancel_marker_expiry(job_id) is not None:
        raise JobCancelledError(job_id=job_id, job_type="")
    return None


def _raise_if_final(status: JobStatus, job_id: str) -> None:
    """Raise the error of a job that failed or was cancelled (a success is returned by the caller)."""
    from cloudjobs.idempotency.status import JobState

    match status.state:
        case JobState.FAILED:
            raise JobFailedError(
                job_id=job_id, job_type=status.job_type, error=status.error, attempts=status.attempts
            )
        case JobState.CANCELLED:
            raise JobCancelledError(job_id=job_id, job_type=status.job_type)


class _Waiter:
    """Pauses between polls: until the memory store's next write, else by the backoff."""

    def __init__(self, store: IdempotencyStore, deadline: float) -> None:
        self._store = store if isinstance(store, ChangeWaiter) else None
        self._deadline = deadline
        self._interval = FIRST_POLL_INTERVAL

    def mark(self) -> int:
        return self._store.changes() if self._store is not None else 0

    def wait(self, seen: int) -> bool:
        """Pause before the next poll; False when the deadline has come."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return False
        if self._store is not None:
            self._store.wait_for_change(seen, remaining)
        else:
            time.sleep(min(self._interval, remaining))
            self._interval = min(self._interval * 2, MAX_POLL_INTERVAL)
        return True
