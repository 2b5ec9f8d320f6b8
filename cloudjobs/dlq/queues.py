"""DeadLetterQueues: ``jobs.dlq``, the dead-letter queues of every queue of an app.

Each operation takes ``queue=`` (default: the default queue) and runs on that queue's
:class:`~cloudjobs.dlq.queue.DeadLetterQueue`; :meth:`DeadLetterQueues.of` gives the queue's own.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from cloudjobs.backends.base import Backend
from cloudjobs.clock import Clock
from cloudjobs.dlq.models import DeadJob, Progress, RedriveReport
from cloudjobs.dlq.queue import DeadLetterQueue
from cloudjobs.errors import ConfigurationError
from cloudjobs.payloads.store import PayloadStore


class DeadLetterQueues:
    """Browse, redrive and purge the dead-letter queue of any of an app's queues.

    Args:
        backend_of: the backend of a queue by name (None: the default queue).
        queue_names: the app's queues.
        clock: the time ``purge(older_than=...)`` measures ages against.
        payloads: the payload store, whose bodies a purge deletes with their messages.
    """

    def __init__(
        self,
        backend_of: Callable[[str | None], Backend],
        queue_names: Sequence[str],
        *,
        clock: Clock | None = None,
        payloads: PayloadStore | None = None,
    ) -> None:
        self._payloads = payloads
        self._backend_of = backend_of
        self._queue_names = tuple(queue_names)
        self._clock = clock

    def of(self, queue: str | None = None) -> DeadLetterQueue:
        """The dead-letter queue of one queue (default: the default queue's).

        Raises:
            UnknownQueueError: the queue is not one of the app's.
            ConfigurationError: its backend offers no dead-letter administration.
        """
        return DeadLetterQueue(self._backend_of(queue), clock=self._clock, payloads=self._payloads)

    def list(
        self,
        limit: int = 50,
        job_type: str | None = None,
        reason: str | None = None,
        *,
        queue: str | None = None,
    ) -> builtins.list[DeadJob]:
        """:meth:`DeadLetterQueue.list` on ``queue``'s dead-letter queue."""
        return self.of(queue).list(limit=limit, job_type=job_type, reason=reason)

    def redrive(
        self,
        job_ids: Iterable[str] | None = None,
        job_type: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
        *,
        rate: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        queue: str | None = None,
    ) -> RedriveReport:
        """:meth:`DeadLetterQueue.redrive` on ``queue``'s dead-letter queue, back to ``queue``."""
        return self.of(queue).redrive(job_ids, job_type, reason, dry_run, rate=rate, on_progress=on_progress)

    def purge(
        self,
        job_type: str | None = None,
        older_than: timedelta | float | None = None,
        *,
        queue: str | None = None,
        job_ids: Iterable[str] | None = None,
    ) -> int:
        """:meth:`DeadLetterQueue.purge` on ``queue``'s dead-letter queue.

        Raises:
            ConfigurationError: ``queue`` is not given and the app has several queues (deleting is
                never done on a guess), or as :meth:`DeadLetterQueue.purge`.
        """
        if queue is None and len(self._queue_names) > 1:
            raise ConfigurationError(
                f"the app has several queues ({', '.join(self._queue_names)}): name the one whose "
                "dead letters to purge",
                setting="queue",
            )
        return self.of(queue).purge(job_type=job_type, older_than=older_than, job_ids=job_ids)
