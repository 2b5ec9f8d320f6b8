"""CancellationMiddleware: cancellation markers for jobs that keep no record.

A job with a record (``idempotent`` or ``track_status``) is cancelled through it: its lease write
refuses a cancelled record, and its heartbeat renewal reports a cancellation request, at no extra
request. A job without a record has only the marker ``jobs.cancel`` writes when it finds no record,
so for those jobs this middleware reads it: one strongly consistent GetItem before the handler runs,
and one per heartbeat interval while it runs (the worker's; Lambda checks only before the start).

A marker that cannot be read does not stop the job: cancellation is best effort where there is no
record, and a store outage must not halt every job.
"""

from __future__ import annotations

import logging

from cloudjobs.errors import IdempotencyError
from cloudjobs.idempotency.base import JobControlStore
from cloudjobs.job import Job
from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import Cancelled, Outcome
from cloudjobs.run import Run

logger = logging.getLogger("cloudjobs.cancellation")


class CancellationMiddleware(RunHandle):
    """Skips (before the start) or flags (while running) jobs without a record that were cancelled.

    Keeps no per-run state: the middleware is its own handle, shared by every run.

    Args:
        store: where ``jobs.cancel`` wrote its markers.
    """

    __slots__ = ("store",)

    def __init__(self, store: JobControlStore) -> None:
        self.store = store

    def start(self, run: Run) -> RunHandle:
        """This middleware itself: it keeps nothing per run."""
        return self

    def before_run(self, run: Run) -> Outcome | None:
        """Acknowledge a marked job without running it."""
        prepared = run.prepared
        assert prepared is not None
        if prepared.definition.has_record or not self._is_marked(prepared.job):
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
        try:
            return self.store.is_marked_cancelled(job.id)
        except IdempotencyError as exc:
            logger.warning("cancellation marker of job %s not read: %s", job.id, exc)
            return False
