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

from cloudjobs.consumer import Prepared
from cloudjobs.errors import IdempotencyError
from cloudjobs.idempotency.base import JobControlStore
from cloudjobs.job import Job
from cloudjobs.outcomes import Cancelled, Outcome

logger = logging.getLogger("cloudjobs.cancellation")


class CancellationMiddleware:
    """Skips (before the start) or flags (while running) jobs without a record that were cancelled.

    Args:
        store: where ``jobs.cancel`` wrote its markers.
    """

    def __init__(self, store: JobControlStore) -> None:
        self.store = store

    def before_run(self, prepared: Prepared) -> Outcome | None:
        """Acknowledge a marked job without running it."""
        if prepared.definition.has_record or not self._is_marked(prepared.job):
            return None
        logger.info("job %s was cancelled: acknowledged without running", prepared.job.id)
        return Cancelled()

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """Nothing to settle: a marker is never changed by a run."""
        return outcome

    def renew(self, prepared: Prepared) -> None:
        """On the heartbeat: set ``job.cancelled`` when a marker appeared since the start."""
        job = prepared.job
        if not prepared.definition.has_record and not job.cancelled and self._is_marked(job):
            logger.info("job %s: cancellation requested", job.id)
            job.cancel_signal.set()

    def record_progress(self, job: Job, percent: int) -> None:
        """Jobs without a record keep no progress."""

    def after_timeout(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """Nothing is held past a timeout."""
        return outcome

    def after_late_return(self, prepared: Prepared, *, result: object, error: BaseException | None) -> None:
        """Nothing is held past a timeout."""

    def _is_marked(self, job: Job) -> bool:
        try:
            return self.store.is_marked_cancelled(job.id)
        except IdempotencyError as exc:
            logger.warning("cancellation marker of job %s not read: %s", job.id, exc)
            return False
