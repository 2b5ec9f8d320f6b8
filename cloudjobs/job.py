"""Job: what a handler knows about the job it runs, and the context variable that holds it."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from pydantic import JsonValue

from cloudjobs.backends.base import Delivery
from cloudjobs.envelope import Envelope
from cloudjobs.errors import ConfigurationError
from cloudjobs.frozen import draft_of

_current_job: contextvars.ContextVar[Job | None] = contextvars.ContextVar("cloudjobs_job", default=None)

_condition_lock = threading.Lock()
"""Guards the creation of a cancel signal's condition (once per signal that is ever set or waited on)."""


class _CancelSignal(threading.Event):
    """A :class:`threading.Event` whose condition (a ``Condition`` and its ``Lock``) is made on first
    use, by :meth:`set`, :meth:`wait` or :meth:`clear`.

    Every job gets one and almost none is ever cancelled or waited on: building the condition up
    front was a tenth of the consumer core's time per message. :meth:`is_set` reads the flag, as the
    standard ``Event`` does, without it.
    """

    # No Event.__init__ (it would build the condition now), and no __init__ frame at all: the flag
    # reads False from the class until set() stores the instance's own.
    __init__ = object.__init__
    _flag = False

    # A property rather than __getattr__: a class with __getattr__ makes every attribute read on its
    # instances slower (is_set() and its _flag, once per job), not only the reads that miss.
    @property
    def _cond(self) -> threading.Condition:
        condition: threading.Condition | None = self.__dict__.get("_condition")
        if condition is None:
            with _condition_lock:
                # Two threads may ask at once: both must get the one condition, or a wakeup is lost.
                condition = self.__dict__.get("_condition")
                if condition is None:
                    condition = self._condition = threading.Condition(threading.Lock())
        return condition


@dataclass(frozen=True, slots=True)
class Job:
    """The running job, passed to handlers that take a second argument.

    Attributes:
        id: the job id (kept across retries and redrives).
        type: the name the job was registered under.
        attempt: this attempt's number, from 1.
        max_attempts: attempts allowed in all.
        enqueued_at: when the job was first enqueued (UTC).
        correlation_id: shared by every job started from one request; inherited by jobs this
            handler enqueues.
        queue: the name of the queue the job came from.
        timeout: the handler's time limit.
        idempotency_key: the producer's key, when it set one.
        message: the raw delivery, for advanced use.
        envelope: the decoded envelope.
        progress_reporter: where :meth:`progress` goes (set by the consumer for jobs with a record).
        cancel_signal: set when ``jobs.cancel`` reached the running job (read :attr:`cancelled`).
        child_results_reader: reads a flow parent's children's results (set by the flow middleware).
    """

    id: str
    type: str
    attempt: int
    max_attempts: int
    enqueued_at: datetime
    correlation_id: str
    queue: str
    timeout: timedelta
    idempotency_key: str | None
    message: Delivery
    envelope: Envelope
    progress_reporter: Callable[[Job, int], None] | None = field(default=None, repr=False, compare=False)
    cancel_signal: threading.Event = field(default_factory=_CancelSignal, repr=False, compare=False)
    child_results_reader: Callable[[], dict[str, JsonValue]] | None = field(
        default=None, repr=False, compare=False
    )

    def child_results(self) -> dict[str, JsonValue]:
        """A flow parent's children's results: child id → result (JSON values), for every child that
        completed (a child that failed, or had not finished when the flow timed out, is left out).

        Strongly consistent reads of the children's records (on DynamoDB one BatchGetItem per
        hundred children), each call.

        Raises:
            ConfigurationError: this job is not a flow's parent (see ``jobs.flow``).
            IdempotencyStoreError: the store could not be reached.
        """
        if self.child_results_reader is None:
            raise ConfigurationError(
                f"job {self.id} ({self.type}) is not a flow's parent: it has no children"
            )
        return self.child_results_reader()

    @property
    def cancelled(self) -> bool:
        """True once ``jobs.cancel(job_id)`` reached this run: stop at the next safe point.

        Cooperative: nothing interrupts the handler. A worker refreshes it at least once per
        heartbeat interval; on Lambda it is only checked before the handler starts (a cancelled job
        does not start), so it stays False while a Lambda handler runs. Once it is True the run ends
        ``cancelled`` however the handler ends (see docs/operations.md).
        """
        return self.cancel_signal.is_set()

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this attempt sends the job to the dead-letter queue."""
        return self.attempt >= self.max_attempts

    def progress(self, percent: int) -> None:
        """Report how far the job is, 0–100, visible through ``jobs.status(job_id)``.

        Each call is one write to the idempotency store (jobs with ``idempotent=True`` or
        ``track_status=True``); for other jobs it does nothing. A failed write is logged, not raised.

        Raises:
            ValueError: ``percent`` is outside 0–100.
        """
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"progress is a whole percentage 0–100, not {percent!r}")
        if self.progress_reporter is not None:
            self.progress_reporter(self, percent)


_JOB_DRAFT = draft_of(
    Job,
    "id",
    "type",
    "attempt",
    "max_attempts",
    "enqueued_at",
    "correlation_id",
    "queue",
    "timeout",
    "idempotency_key",
    "message",
    "envelope",
    "progress_reporter",
    "cancel_signal",
    "child_results_reader",
)


def build_job(
    id: str,
    type: str,
    attempt: int,
    max_attempts: int,
    enqueued_at: datetime,
    correlation_id: str,
    queue: str,
    timeout: timedelta,
    idempotency_key: str | None,
    message: Delivery,
    envelope: Envelope,
    progress_reporter: Callable[[Job, int], None] | None,
) -> Job:
    """``Job(...)`` with these fields (a fresh cancel signal, no child results reader), built for
    each prepared message at a fraction of the frozen ``__init__``'s cost (see :mod:`cloudjobs.frozen`)."""
    draft = object.__new__(_JOB_DRAFT)
    draft.id = id
    draft.type = type
    draft.attempt = attempt
    draft.max_attempts = max_attempts
    draft.enqueued_at = enqueued_at
    draft.correlation_id = correlation_id
    draft.queue = queue
    draft.timeout = timeout
    draft.idempotency_key = idempotency_key
    draft.message = message
    draft.envelope = envelope
    draft.progress_reporter = progress_reporter
    draft.cancel_signal = _CancelSignal()
    draft.child_results_reader = None
    draft.__class__ = Job
    job: Job = draft
    return job


def current_job() -> Job | None:
    """The job running in this context (thread or task), or None outside a handler."""
    return _current_job.get()


# The context variable's own methods rather than wrapper functions: one call fewer per job.
set_current_job: Final[Callable[[Job | None], contextvars.Token[Job | None]]] = _current_job.set
"""Make a job the current one; returns the token to restore the previous one."""
reset_current_job: Final[Callable[[contextvars.Token[Job | None]], None]] = _current_job.reset
"""Restore the job that was current before :func:`set_current_job`."""
