"""FlowMiddleware: the consumer's side of flows, in the single delivery pipeline.

It sits before the idempotency middleware, so its hooks run around that one's::

    before_run (a flow parent's message):  open the gate ─┬─ Opened, ready        → run, with child_results()
                                                          ├─ Opened, child failed → DeadLetter(child_failed)
                                                          ├─ OpenedElsewhere      → acknowledged, not run
                                                          └─ NotReady             → Deferred to the deadline
    settle (a flow child, after the idempotency middleware completed or released its record):
        Completed / DeadLetter / Cancelled → count the child once; the last one sends the parent

The order makes a crash harmless. A child's record is final before the flow counts it, and the
flow counts it before its message is acknowledged: a worker that dies in between leaves the
message to be delivered again, and that delivery counts the child again, which changes nothing
once it was counted (the count is a set of ids), and sends the parent if the flow is ready. The
parent goes out under its own job id, and only one of its two messages (due at the timeout, or
sent early) passes the gate, so sending it twice runs it once.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Final

from cloudjobs.backends.base import MAX_VISIBILITY
from cloudjobs.errors import BackendError, CloudjobsError, IdempotencyError
from cloudjobs.flows.definition import OnChildFailure
from cloudjobs.flows.store import FlowState, FlowStore, NotReady, Opened, OpenedElsewhere
from cloudjobs.idempotency.base import Status, store_key
from cloudjobs.middleware import RunHandle
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Reason
from cloudjobs.run import Run

logger = logging.getLogger("cloudjobs.flows")

_STORE_DOWN_DEFERRAL: Final = timedelta(seconds=5)
_MIN_DEFERRAL: Final = timedelta(seconds=1)
_FINAL = frozenset({Status.COMPLETED, Status.DEAD_LETTERED, Status.CANCELLED})


class FlowMiddleware:
    """Gates flow parents and counts flow children (see the module docstring).

    Args:
        store: the flow store, asked for on the first flow message.
        send_parent: sends a ready flow's parent (its ``early`` message).
        now: the time source the gate compares the deadline with.
    """

    def __init__(
        self,
        store: Callable[[], FlowStore],
        *,
        send_parent: Callable[[FlowState], None],
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._send_parent = send_parent
        self._now = now

    def start(self, run: Run) -> RunHandle:
        """A handle for the run (it looks at the envelope once the delivery is prepared)."""
        return _FlowRun(self)

    @property
    def store(self) -> FlowStore:
        """The flow store."""
        return self._store()

    def now(self) -> datetime:
        """The current time."""
        return self._now()

    def count_child(self, flow_key: str, child_id: str, *, failed: bool) -> None:
        """Count a finished child and send the parent when that made the flow ready.

        Raises:
            IdempotencyError: the store could not be reached.
            BackendError: the parent could not be sent.
        """
        state = self.store.finish_child(flow_key, child_id, failed=failed)
        if state is None:
            logger.warning("job %s: its flow's record %r is gone; not counted", child_id, flow_key)
            return
        # A redelivered child sees the flow as it is: it re-sends a parent that may not have left.
        if state.opened_by is None and state.parent_status not in _FINAL and state.is_ready(self.now()):
            self._send_parent(state)


class _FlowRun(RunHandle):
    """One run's part in a flow: as a parent (the gate) and as a child (the count)."""

    __slots__ = ("_flows", "_is_skipped", "_known_final")

    def __init__(self, flows: FlowMiddleware) -> None:
        self._flows = flows
        self._is_skipped = False
        self._known_final: Status | None = None

    def before_run(self, run: Run) -> Outcome | None:
        """Open the gate of a flow parent's message; other jobs pass."""
        assert run.prepared is not None
        prepared = run.prepared
        envelope, job = prepared.envelope, prepared.job
        if envelope.flow_route is None or job.idempotency_key is None:
            return None
        key = store_key(job.type, job.idempotency_key)
        now = self._flows.now()
        try:
            answer = self._flows.store.open(
                key, envelope.flow_route, now=now, is_redrive=envelope.redrive_count > 0
            )
        except IdempotencyError as exc:
            logger.warning("flow parent %s deferred: store unavailable: %s", job.id, exc)
            return Deferred(delay=_STORE_DOWN_DEFERRAL, reason=Reason.IDEMPOTENCY_STORE_UNAVAILABLE)
        match answer:
            case None:
                logger.warning("flow parent %s has no flow record (expired?): run without children", job.id)
                return None
            case NotReady(deadline=deadline):
                delay = min(max(deadline - now, _MIN_DEFERRAL), MAX_VISIBILITY)
                return Deferred(delay=delay, reason=Reason.NOT_DUE)
            case OpenedElsewhere(state=state):
                logger.info("flow parent %s: its other message runs it; acknowledged", job.id)
                self._is_skipped = True
                self._known_final = state.parent_status if state.parent_status in _FINAL else None
                return Completed(result=None)
            case Opened(state=state):
                if state.parent_status in _FINAL and envelope.redrive_count == 0:
                    # A second copy of the message that ran (or failed) the parent already.
                    self._is_skipped = True
                    self._known_final = state.parent_status
                    return Completed(result=None)
                failure = _failure_of(state, now)
                if failure is not None:
                    return self._fail(run, key, failure)
                reader = partial(self._flows.store.results, dict(state.children))
                run.prepared = dataclasses.replace(
                    prepared, job=dataclasses.replace(job, child_results_reader=reader)
                )
                return None
        raise AssertionError(f"unexpected answer {answer!r}")  # pragma: no cover

    def _fail(self, run: Run, key: str, error: str) -> Outcome:
        assert run.prepared is not None
        job = run.prepared.job
        try:
            is_ours = self._flows.store.fail_parent(key, error, is_redrive=job.envelope.redrive_count > 0)
        except IdempotencyError as exc:
            logger.warning("flow parent %s deferred: store unavailable: %s", job.id, exc)
            return Deferred(delay=_STORE_DOWN_DEFERRAL, reason=Reason.IDEMPOTENCY_STORE_UNAVAILABLE)
        self._known_final = Status.DEAD_LETTERED
        if not is_ours:
            # Two copies of the early message raced: the other one dead-letters the parent.
            self._is_skipped = True
            return Completed(result=None)
        return DeadLetter(
            reason=Reason.CHILD_FAILED, error=error, attempt=job.attempt, job_type=job.type, job_id=job.id
        )

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        """Count a flow child that finished (after its record was settled); a failed count leaves
        the message to be delivered again."""
        prepared = run.prepared
        if prepared is None or prepared.envelope.flow_parent is None or run.is_still_running:
            return outcome
        failed = self._finished_as_failed(outcome)
        if failed is None:
            return outcome
        return self._count(run, outcome, failed=failed)

    def settle_late(self, run: Run, *, result: object, error: BaseException | None) -> None:
        """A timed-out sync child returned at last: count it if it succeeded."""
        prepared = run.prepared
        if prepared is None or prepared.envelope.flow_parent is None or error is not None:
            return
        self._count(run, Completed(result=result), failed=False)

    def _finished_as_failed(self, outcome: Outcome) -> bool | None:
        """True: the child failed; False: it succeeded; None: it has not finished."""
        if self._is_skipped:
            # This copy did not run the job: report what its record says (a copy delivered after a
            # crash still counts it), nothing while the other copy runs.
            return None if self._known_final is None else self._known_final is not Status.COMPLETED
        match outcome:
            case Completed():
                return False
            case DeadLetter() | Cancelled():
                return True
        return None

    def _count(self, run: Run, outcome: Outcome, *, failed: bool) -> Outcome:
        assert run.prepared is not None
        envelope, job = run.prepared.envelope, run.prepared.job
        assert envelope.flow_parent is not None
        try:
            self._flows.count_child(envelope.flow_parent, job.id, failed=failed)
        except (IdempotencyError, BackendError) as exc:
            # The child's record is final; its message comes back and counts it then.
            logger.warning("counting flow child %s failed (retried): %s", job.id, exc)
            return Deferred(delay=_STORE_DOWN_DEFERRAL, reason=Reason.IDEMPOTENCY_STORE_UNAVAILABLE)
        except CloudjobsError as exc:
            logger.error("sending the parent of flow child %s failed: %s", job.id, exc)
        return outcome


def _failure_of(state: FlowState, now: datetime) -> str | None:
    """Why the parent fails without running under its rule, or None when it runs."""
    if state.on_child_failure is not OnChildFailure.FAIL:
        return None
    if state.failed > 0:
        return f"{state.failed} of {state.total} children went to the dead-letter queue"
    unfinished = state.total - state.finished
    if unfinished > 0 and state.deadline <= now:
        return f"the flow timed out with {unfinished} of {state.total} children unfinished"
    return None
