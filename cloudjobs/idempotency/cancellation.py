"""CancellationMiddleware: cancellation markers, checked once per received batch.

``jobs.cancel(job_id)`` cancels through the job's record when it finds one; otherwise it writes a
marker under the job id: for jobs that keep no record, and for jobs whose record does not exist yet
(a tracked job enqueued without ``CLOUDJOBS_STATUS_TRACKING`` gets its record at its first attempt).
This middleware asks the store which of a received batch's jobs are marked (on DynamoDB, from the
cancellation register, read at most once a second: see
:mod:`cloudjobs.idempotency.dynamodb_register`) and acknowledges a marked job without running it; a
tracked job's record then says cancelled. While a job without a record runs, the
worker's heartbeat asks the same once per interval (Lambda checks only before the start).

A job whose id the batch's check did not cover (a foreign message without a ``cloudjobs.id``
attribute) is checked alone if it keeps no record. A marker that cannot be read does not
stop the job: cancellation without a record is best effort, and a store outage must not halt every
job.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from cloudjobs.backends.base import Delivery
from cloudjobs.envelope import ID_ATTRIBUTE
from cloudjobs.errors import IdempotencyError
from cloudjobs.idempotency.base import JobControlStore
from cloudjobs.job import Job
from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import Cancelled, Outcome
from cloudjobs.routing import attribute_of
from cloudjobs.run import Run

logger = logging.getLogger("cloudjobs.cancellation")

_REMEMBERED: Final = 10_000
"""Batch reads kept for runs not started yet (a worker holds at most concurrency + prefetch)."""


class CancellationMiddleware(RunHandle):
    """Skips (before the start) or flags (while running) jobs that a cancellation marker names.

    Keeps no per-run state: the middleware is its own handle, shared by every run. What a batch read
    found waits in a bounded table by job id until the job's run starts.

    Args:
        store: where ``jobs.cancel`` wrote its markers.
    """

    __slots__ = ("_lock", "_read", "store")

    def __init__(self, store: JobControlStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._read: OrderedDict[str, bool] = OrderedDict()

    def start(self, run: Run) -> RunHandle:
        """This middleware itself: it keeps nothing per run."""
        return self

    def prefetch(self, deliveries: Sequence[Delivery]) -> None:
        """Read the markers of the batch's jobs with one request."""
        job_ids = [attribute_of(delivery, ID_ATTRIBUTE) or delivery.message_id for delivery in deliveries]
        try:
            marked = self.store.marked_cancelled(job_ids)
        except IdempotencyError as exc:
            logger.warning("cancellation markers of %d jobs not read: %s", len(job_ids), exc)
            return
        with self._lock:
            for job_id in job_ids:
                self._read[job_id] = job_id in marked
                self._read.move_to_end(job_id)
            while len(self._read) > _REMEMBERED:
                self._read.popitem(last=False)

    def before_run(self, run: Run) -> Outcome | None:
        """Acknowledge a marked job without running it."""
        prepared = run.prepared
        assert prepared is not None
        with self._lock:
            read = self._read.pop(prepared.job.id, None)
        if read is None:
            # Not covered by a batch read: jobs with a record are cancelled through it.
            read = not prepared.definition.has_record and self._is_marked(prepared.job)
        if not read:
            return None
        logger.info("job %s was cancelled: acknowledged without running", prepared.job.id)
        return Cancelled()

    def renew(self, run: Run) -> None:
        """On the heartbeat: set ``job.cancelled`` when a marker appeared since the start."""
        prepared = run.prepared
        if prepared is None or prepared.definition.has_record:
            return
        job = prepared.job
        if not job.cancelled and self._is_marked(job):
            logger.info("job %s: cancellation requested", job.id)
            job.cancel_signal.set()

    def _is_marked(self, job: Job) -> bool:
        # As a batch of one: on DynamoDB the register answers, read at most once per refresh
        # interval for every running job together.
        try:
            return job.id in self.store.marked_cancelled((job.id,))
        except IdempotencyError as exc:
            logger.warning("cancellation marker of job %s not read: %s", job.id, exc)
            return False
