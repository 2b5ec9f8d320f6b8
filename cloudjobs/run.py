"""One delivery's run through the pipeline: what it turned out to be, and what its middleware holds.

A :class:`Run` is made for every delivery as it enters :meth:`cloudjobs.consumer.Consumer.run` and
lives until its outcome is applied (or, for a sync handler settled by its deadline, until its thread
ends). Middleware keep their per-run state on the :class:`~cloudjobs.middleware.RunHandle` they return
for it, never in tables keyed by receipt handle; runtimes reach that state through the run's
:meth:`Run.renew` (on their heartbeat) and the job's ``progress()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cloudjobs.backends.base import Delivery, QueueInfo
from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import Envelope
from cloudjobs.frozen import draft_of
from cloudjobs.job import Job
from cloudjobs.retry import RetryPolicy
from cloudjobs.run_lease import lease_limit

if TYPE_CHECKING:
    from cloudjobs.middleware import RunHandle

logger = logging.getLogger("cloudjobs.consumer")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A delivery that decoded and validated: ready to run.

    Attributes:
        delivery: the message as received.
        envelope: its decoded envelope.
        definition: the job's registration.
        payload: the validated payload, of the handler's payload type.
        job: what the handler is told about its job.
        policy: the retry policy in force for this job.
    """

    delivery: Delivery
    envelope: Envelope
    definition: JobDefinition
    payload: Any
    job: Job
    policy: RetryPolicy


_PREPARED_DRAFT = draft_of(Prepared, "delivery", "envelope", "definition", "payload", "job", "policy")


def build_prepared(
    delivery: Delivery,
    envelope: Envelope,
    definition: JobDefinition,
    payload: Any,
    job: Job,
    policy: RetryPolicy,
) -> Prepared:
    """``Prepared(...)``, built for each prepared message at a fraction of the cost of the frozen
    ``__init__`` (see :mod:`cloudjobs.frozen`)."""
    draft = object.__new__(_PREPARED_DRAFT)
    draft.delivery = delivery
    draft.envelope = envelope
    draft.definition = definition
    draft.payload = payload
    draft.job = job
    draft.policy = policy
    draft.__class__ = Prepared
    prepared: Prepared = draft
    return prepared


@dataclass(slots=True, eq=False)
class Run:
    """The state of one delivery's run, shared by the pipeline, its middleware and the runtime.

    Attributes:
        delivery: the message as received.
        queue: the configuration of the queue it came from.
        time_left: how long the run may still last, when the runtime knows it (a Lambda
            invocation's remaining time); None: the runtime keeps the run alive on its heartbeat.
        prepared: the decoded and validated job (None until then, and for a delivery that failed to).
        has_started: the handler was called.
        is_still_running: a sync handler passed its timeout and was settled while its thread runs on.
        error: what the handler (or the pipeline around it) raised, when it raised.
        started: when the handler was called (``time.perf_counter()``).
        handles: each middleware's hooks for this run, in middleware order.
    """

    delivery: Delivery
    queue: QueueInfo
    time_left: Callable[[], timedelta] | None = None
    prepared: Prepared | None = None
    has_started: bool = False
    is_still_running: bool = False
    error: BaseException | None = None
    started: float = 0.0
    handles: list[RunHandle] = field(default_factory=list)

    @property
    def lease_limit(self) -> timedelta | None:
        """How long a lease taken now for this run need last (None: renewed on the heartbeat)."""
        if self.time_left is None:
            return None
        return lease_limit(self.time_left())

    @property
    def job(self) -> Job | None:
        """The job, once the delivery was prepared."""
        return None if self.prepared is None else self.prepared.job

    def renew(self) -> None:
        """Extend what the run holds (leases) and look for a cancellation; the runtime's heartbeat
        calls it while the handler runs. A failing hook is logged, never raised."""
        for handle in self.handles:
            try:
                handle.renew(self)
            except Exception:
                logger.exception("renewing run of message %s failed", self.delivery.message_id)

    def record_progress(self, job: Job, percent: int) -> None:
        """Pass a running job's ``job.progress(percent)`` to the middleware that keep it."""
        for handle in self.handles:
            handle.record_progress(self, percent)
