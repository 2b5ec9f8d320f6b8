"""DeadLetterQueue: ``jobs.dlq``, the operator's view of the dead-letter queue.

``list`` reads without deleting, ``redrive`` puts jobs back on the source queue, ``purge`` deletes.
See docs/operations.md, "Operating the dead-letter queue".
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Final

from cloudjobs.backends.base import (
    MAX_BATCH_ENTRIES,
    MAX_MOVE_TASK_RATE,
    MAX_VISIBILITY,
    Backend,
    DeadLetterAdmin,
    DeadLetterMover,
)
from cloudjobs.clock import Clock, SystemClock
from cloudjobs.definition import as_timedelta
from cloudjobs.dlq.browse import holding
from cloudjobs.dlq.models import DeadJob, Progress, RedriveReport, read_dead_job
from cloudjobs.dlq.move_task import redrive_with_move_task
from cloudjobs.dlq.purge import purge_all, purge_matching
from cloudjobs.dlq.redrive import Pacer, redrive_by_receiving
from cloudjobs.errors import ConfigurationError
from cloudjobs.payloads.store import PayloadStore

DEFAULT_HOLD: Final = timedelta(minutes=5)
"""How long an operation keeps the DLQ messages it read invisible, at most (all are released at
its end); the time they stay hidden if the process dies mid-way."""


class DeadLetterQueue:
    """Browse, redrive and purge a queue's dead-letter queue.

    Args:
        backend: the source queue; it must also implement
            :class:`~cloudjobs.backends.base.DeadLetterAdmin` (MemoryBackend and SqsBackend do).
        clock: the time ``purge(older_than=...)`` measures ages against.
        hold: how long messages read stay invisible at most (seconds or timedelta, up to 12 h).
        poll_interval: how often a move task's progress is read (seconds or timedelta).
        sleep: waits the given seconds (rate limit, move-task polling); injectable for tests.
        monotonic: a monotonic clock in seconds, for the rate limit; injectable for tests.
        payloads: the payload store: a purge deletes the stored bodies of the pointer messages it
            deletes (receiving them: no PurgeQueue then).

    Raises:
        ConfigurationError: the backend offers no dead-letter administration, or ``hold`` is
            outside 1 s – 12 h.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        clock: Clock | None = None,
        hold: timedelta | float = DEFAULT_HOLD,
        poll_interval: timedelta | float = timedelta(seconds=5),
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        payloads: PayloadStore | None = None,
    ) -> None:
        self._payloads = payloads
        if not isinstance(backend, DeadLetterAdmin):
            raise ConfigurationError(
                f"{type(backend).__name__} offers no dead-letter administration (DeadLetterAdmin)"
            )
        self._backend = backend
        self._admin: DeadLetterAdmin = backend
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._hold = as_timedelta(hold, name="hold") or timedelta(0)
        if not timedelta(seconds=1) <= self._hold <= MAX_VISIBILITY:
            raise ConfigurationError("must be 1 s to 12 h", setting="hold")
        self._poll_interval = as_timedelta(poll_interval, name="poll_interval") or timedelta(0)
        self._sleep = sleep
        self._monotonic = monotonic

    def list(
        self, limit: int = 50, job_type: str | None = None, reason: str | None = None
    ) -> builtins.list[DeadJob]:
        """Up to ``limit`` distinct dead-lettered jobs, optionally of one type and/or reason.

        The messages are received, held invisible while they are read, and all released
        (visibility 0) before this returns, also on an error: nothing is deleted, and a second
        listing shows the same messages. With filters, the DLQ is read until ``limit`` jobs match
        or it is exhausted. The DLQ's receive counts grow by one per listing (harmless: a DLQ has no
        redrive policy of its own).

        Raises:
            ConfigurationError: ``limit`` is below 1, or the queue has no dead-letter queue.
            BackendError: the DLQ could not be read or released.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError("must be a whole number of at least 1", setting="limit")
        matches = _matcher(job_ids=None, job_type=job_type, reason=reason)
        filtered = job_type is not None or reason is not None
        found: builtins.list[DeadJob] = []
        with holding(self._admin, hold=self._hold) as held:
            while len(found) < limit:
                wanted = MAX_BATCH_ENTRIES if filtered else min(MAX_BATCH_ENTRIES, limit - len(found))
                deliveries = held.receive(wanted)
                if not deliveries:
                    break
                found.extend(job for job in map(read_dead_job, deliveries) if matches(job))
        return found[:limit]

    def redrive(
        self,
        job_ids: Iterable[str] | None = None,
        job_type: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
        *,
        rate: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> RedriveReport:
        """Move dead-lettered jobs back to the source queue.

        Without filters, on a backend with server-side move tasks (SQS), one StartMessageMoveTask
        moves everything and is polled until it ends; bodies are not rewritten on that path (see
        :mod:`cloudjobs.dlq.move_task`). Otherwise each matching message is received, sent back
        (same job id, ``redrive_count`` + 1, attempts restarting at 1, dead-letter record dropped)
        and then deleted from the DLQ; a crash in between leaves a duplicate, never a loss.

        Either way a redrive stops at what the DLQ held when it started, even while jobs it moved
        fail again and come back: by receiving, such a copy is never moved twice and is left in the
        DLQ (``returned``); a move task is cancelled once it has moved the count SQS read at its
        start. The report's ``stop`` says why the run ended (see :mod:`cloudjobs.dlq.redrive` and
        :mod:`cloudjobs.dlq.move_task`).

        Args:
            job_ids: only these jobs (a message without a job id matches its DLQ message id).
            job_type: only jobs of this type.
            reason: only jobs dead-lettered for this reason.
            dry_run: report what would move; change nothing.
            rate: at most this many messages per second (a move task takes 1–500).
            on_progress: called after each step with the messages handled so far.

        Raises:
            ConfigurationError: ``rate`` is not positive, ``job_ids`` is a single string, or the
                queue has no dead-letter queue.
            BackendError: the DLQ could not be read, or a move task could not start, or could
                not be cancelled while it still ran.
        """
        if rate is not None and (isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0):
            raise ConfigurationError("must be a positive number of messages per second", setting="rate")
        if isinstance(job_ids, str):
            raise ConfigurationError("takes a list of job ids, not one string", setting="job_ids")
        ids = frozenset(job_ids) if job_ids is not None else None
        unfiltered = ids is None and job_type is None and reason is None
        if (
            unfiltered
            and not dry_run
            and isinstance(self._backend, DeadLetterMover)
            and (rate is None or rate >= 1)
        ):
            report = redrive_with_move_task(
                self._backend,
                max_messages_per_second=None if rate is None else min(int(rate), MAX_MOVE_TASK_RATE),
                poll_interval=self._poll_interval,
                sleep=self._sleep,
                on_progress=on_progress,
            )
            if report is not None:
                return report
        return redrive_by_receiving(
            self._backend,
            self._admin,
            matches=_matcher(job_ids=ids, job_type=job_type, reason=reason),
            dry_run=dry_run,
            hold=self._hold,
            pacer=Pacer(rate, sleep=self._sleep, monotonic=self._monotonic),
            on_progress=on_progress,
        )

    def purge(
        self,
        job_type: str | None = None,
        older_than: timedelta | float | None = None,
        *,
        job_ids: Iterable[str] | None = None,
    ) -> int:
        """Delete dead-lettered jobs; returns how many.

        Without filters the whole DLQ is purged with one PurgeQueue, and the count returned is the
        DLQ's *approximate* depth read just before (SQS's counts lag, and messages may arrive in
        between). With filters, matching messages are received and deleted one batch at a time,
        the rest released, and the count is exact. With a payload store every purge receives and
        deletes, and deletes the stored bodies of the pointer messages it deleted. ``older_than``
        compares with each job's ``last_failed_at``; a message without a recorded failure time never
        matches it. ``job_ids`` purges only those jobs (a message without a job id is matched by its
        message id), as the dashboard's selection does.

        Raises:
            ConfigurationError: ``older_than`` is negative, or the queue has no dead-letter queue.
            BackendError: the purge or a delete was refused.
        """
        age = as_timedelta(older_than, name="older_than")
        if age is not None and age < timedelta(0):
            raise ConfigurationError("must not be negative", setting="older_than")
        chosen = frozenset(job_ids) if job_ids is not None else None
        if chosen is not None and not chosen:
            return 0
        if job_type is None and age is None and chosen is None and self._payloads is None:
            return purge_all(self._admin)
        type_matches = _matcher(job_ids=chosen, job_type=job_type, reason=None)
        now = self._clock.now()

        def matches(job: DeadJob) -> bool:
            if not type_matches(job):
                return False
            if age is None:
                return True
            return job.last_failed_at is not None and now - job.last_failed_at > age

        return purge_matching(self._admin, matches=matches, hold=self._hold, payloads=self._payloads)


def _matcher(
    *, job_ids: frozenset[str] | None, job_type: str | None, reason: str | None
) -> Callable[[DeadJob], bool]:
    def matches(job: DeadJob) -> bool:
        if job_ids is not None and (job.job_id or job.message_id) not in job_ids:
            return False
        if job_type is not None and job.type != job_type:
            return False
        return reason is None or job.reason == reason

    return matches
