"""The consumer core: the one pipeline every delivery takes, whatever runtime received it.

:meth:`Consumer.run` is the lifecycle, stage by stage::

    middleware.start → decode → look up the job → validate the payload → handle.before_run
      (cancellation, idempotency lease) → invoke the handler (as the runtime's Invocation says,
      with its timeout) → Outcome → handle.settle (reverse order) → apply(delivery, outcome)

Whatever raises anywhere in it ends as an outcome, never as an exception out of the pipeline: what
the handler raises (any ``BaseException``: ``SystemExit`` and ``KeyboardInterrupt`` too) is that
attempt's failure; what decoding, validation or key derivation raise dead-letters the message with
the stage's reason; anything else raised around the handler (a middleware, a ``MemoryError``) is
retried with backoff and dead-lettered when the attempts run out.

A deferral (``Deferred``: not run now, not an attempt) still spends one of the queue's receives; near
the redrive threshold the consumer asks for the message to be re-sent instead (same job id and
attempt offset), so a job that keeps being deferred never reaches the dead-letter queue that way.

Runtimes only translate: they turn what they received into :class:`Delivery` values, choose an
:class:`~cloudjobs.invocation.Invocation`, and pass an ``apply`` that carries the outcome out
(:class:`~cloudjobs.applier.OutcomeApplier`). Retry and dead-letter policy live here and in
:mod:`cloudjobs.retry`, so the ECS worker, the Lambda adapter and ``drain`` behave alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Final

from cloudjobs.backends.base import MAX_DELAY, Delivery, QueueInfo
from cloudjobs.clock import Clock
from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import TYPE_ATTRIBUTE, Envelope
from cloudjobs.errors import (
    JobTimeoutError,
    MessageError,
    PermanentError,
)
from cloudjobs.failures import dead_letter_of, describe, failure_outcome, next_step
from cloudjobs.hops import resend_copy
from cloudjobs.invocation import INLINE, HandlerExit, Invocation, call_handler, call_handler_async
from cloudjobs.middleware import BatchMiddleware, ConsumerMiddleware, Middleware, RunHandle, as_middleware
from cloudjobs.outcomes import Cancelled, Completed, Deferred, Outcome, Reason
from cloudjobs.payloads.resolve import IsCompleted
from cloudjobs.payloads.store import PayloadStore
from cloudjobs.preparation import Preparation
from cloudjobs.retry import RetryPolicy
from cloudjobs.routing import attribute_of
from cloudjobs.run import Prepared, Run
from cloudjobs.settings import SettingsModel
from cloudjobs.telemetry.attributes import carries_context
from cloudjobs.telemetry.switch import Telemetry, TraceNeed, default_telemetry, is_idle, trace_need

__all__ = ["Apply", "Consumer", "ConsumerMiddleware", "Middleware", "Prepared", "Run", "RunHandle"]

logger = logging.getLogger("cloudjobs.consumer")
job_logger = logging.getLogger("cloudjobs.jobs")
"""One line per attempt: completed (INFO, with its duration) or failed (WARNING, with its traceback)."""

Apply = Callable[[Delivery, Outcome], object]
"""Carries an outcome out (delete, change visibility, dead-letter, report to Lambda)."""

_CONTEXT: Final = TraceNeed.CONTEXT
"""Read from the module's globals: a member read through its class costs more, once per run."""

_COMPLETED: Final = Completed()
"""The outcome of every handler that returns None: frozen, so one serves them all."""


class Consumer:
    """Runs deliveries through the pipeline and decides one outcome for each.

    Args:
        registry: job type → definition.
        settings: defaults for attempts, timeouts, backoff and foreign-message routing.
        queue: the queue's configuration (its maxReceiveCount bounds the attempts).
        random: source of jitter in ``[0, 1)`` (injectable for tests).
        middleware: hooks around every run, in order (:class:`Middleware`, or the deprecated
            :class:`ConsumerMiddleware`).
        telemetry: spans and metrics of each run (default: on, through the global providers); the
            outermost middleware.
        clock: the time due times are compared with (a memory queue's own time in tests).
        payloads: where pointer messages' bodies are read (see :mod:`cloudjobs.payloads`).
        is_completed: with bodies deleted after completion, whether a job's record says it completed.
    """

    def __init__(
        self,
        *,
        registry: Mapping[str, JobDefinition],
        settings: SettingsModel,
        queue: QueueInfo,
        random: Callable[[], float] | None = None,
        middleware: Sequence[Middleware | ConsumerMiddleware] = (),
        telemetry: Telemetry | None = None,
        clock: Clock | None = None,
        payloads: PayloadStore | None = None,
        is_completed: IsCompleted | None = None,
    ) -> None:
        self._queue = queue
        self._telemetry = telemetry or default_telemetry()
        self._middleware: tuple[Middleware, ...] = (
            self._telemetry,
            *(as_middleware(m) for m in middleware),
        )
        self._inner_middleware = self._middleware[1:]
        # A run's trace that would do nothing is not started (see spans.is_idle); a subclass's own
        # start() is always called.
        self._may_skip_trace = type(self._telemetry).start is Telemetry.start
        # What the runs of the latest received batch need of their trace (see begin_batch); None
        # until a runtime begins a batch: each run asks for itself.
        self._trace_need: TraceNeed | None = None
        self._batch_middleware = tuple(m for m in self._middleware if isinstance(m, BatchMiddleware))
        self._preparation = Preparation(
            registry=registry,
            settings=settings,
            queue=queue,
            random=random,
            clock=clock,
            payloads=payloads,
            is_completed=is_completed,
        )

    @property
    def queue(self) -> QueueInfo:
        """The configuration of the queue this consumer reads."""
        return self._queue

    def timeout_of(self, definition: JobDefinition) -> timedelta:
        """The time limit of a job's handler."""
        return self._preparation.timeout_of(definition)

    # -- the lifecycle ----------------------------------------------------------------------------

    def run(self, delivery: Delivery, invocation: Invocation = INLINE, apply: Apply | None = None) -> Outcome:
        """Run one delivery to its outcome; ``apply`` carries the outcome out, exactly once.

        A sync handler on a worker slot that passes its deadline is settled then (a retryable
        :class:`~cloudjobs.errors.JobTimeoutError`); its outcome is applied, and this call returns,
        when the handler does, after the run released what it held.

        Never raises for a message or a handler: every failure ends as an outcome.
        """
        run = Run(delivery, self._queue, invocation.time_left)
        decided = self._begin(run)
        if decided is not None:
            return self._end(run, decided, apply)
        assert run.prepared is not None  # _begin prepares the delivery or decides its outcome
        monitor = invocation.monitor
        # The heartbeat renews what the run holds (leases) while the handler runs.
        renews = monitor is not None and any(type(h).renew is not RunHandle.renew for h in run.handles)
        if renews and monitor is not None:
            monitor.keep_lease(delivery.receipt, run.renew)
        try:
            if run.prepared.definition.is_async:
                return self._end(run, self._outcome_of(run, *_await(run, invocation)), apply)
            if monitor is None:
                return self._end(run, self._outcome_of(run, *call_handler(run)), apply)
            return self._run_with_deadline(run, invocation, apply)
        finally:
            if renews and monitor is not None:
                monitor.drop_lease(delivery.receipt)

    def begin_batch(self, deliveries: Sequence[Delivery]) -> None:
        """Runtimes call it once per received batch, before its runs. Never raises.

        It asks once for the batch which telemetry providers are installed (a provider installed
        later counts from the next batch), and lets the middleware read what the batch's runs will
        need, in one request each (cancellation markers).
        """
        self._ask_trace_need()
        for middleware in self._batch_middleware:
            try:
                middleware.prefetch(deliveries)
            except Exception:
                logger.exception("prefetching for a batch of %d messages failed", len(deliveries))

    def _ask_trace_need(self) -> None:
        if not self._may_skip_trace:
            return
        try:
            self._trace_need = trace_need(self._telemetry)
        except Exception:
            # Each run asks for itself, inside the pipeline that turns a failure into an outcome.
            logger.exception("reading which telemetry providers are installed failed")
            self._trace_need = None

    def process(self, delivery: Delivery) -> Outcome:
        """Run a delivery to its outcome in this thread, applying nothing (for tests and tools).

        Sync handlers run inline with no timeout enforcement; async ones on a private event loop.
        """
        self._ask_trace_need()
        return self.run(delivery)

    def prepare(self, delivery: Delivery) -> Prepared | Outcome:
        """Run the pipeline up to the handler call and stop there (for tests).

        Returns the prepared job, with what ``before_run`` took (its idempotency lease) still held,
        or the outcome when it must not run.
        """
        self._ask_trace_need()
        run = Run(delivery, self._queue)
        decided = self._begin(run)
        if decided is not None:
            return self._settle(run, decided)
        assert run.prepared is not None
        return run.prepared

    # -- stages -----------------------------------------------------------------------------------

    def _begin(self, run: Run) -> Outcome | None:
        """Start the middleware, prepare the delivery, ask ``before_run``; None: run the handler."""
        try:
            delivery, need = run.delivery, self._trace_need
            if not self._may_skip_trace:
                traced = True
            elif need is _CONTEXT:  # the common case: is_idle's answer without its call
                traced = carries_context(delivery.attributes, delivery.system_attributes)
            else:
                traced = not is_idle(self._telemetry, delivery, need)
            if traced:
                trace: RunHandle | None = self._telemetry.start(run)
                if trace is not None:
                    run.handles.append(trace)
            for middleware in self._inner_middleware:
                handle = middleware.start(run)
                if handle is not None:
                    run.handles.append(handle)
            prepared = self._preparation.prepare(run)
            if not isinstance(prepared, Prepared):
                return prepared
            run.prepared = prepared
            for handle in run.handles:
                decided = handle.before_run(run)
                if decided is not None:
                    return self._requeue_if_near_redrive(run.delivery, prepared.envelope, decided)
            return None
        except Exception as exc:  # Nothing raised before the handler may escape the pipeline.
            return self._unexpected(run, exc)

    def _run_with_deadline(self, run: Run, invocation: Invocation, apply: Apply | None) -> Outcome:
        """A sync handler on a worker slot, whose deadline the monitor fires.

        Past its deadline the attempt is settled as a retryable :class:`JobTimeoutError` (its span
        ends, what it holds is kept), but its outcome is applied only when the thread returns: until
        then the heartbeat keeps the message invisible, so attempts of one job never overlap (up to
        SQS's 12-hour visibility cap), and the retry's backoff starts after the thread ended.
        """
        prepared = run.prepared
        assert prepared is not None
        assert invocation.monitor is not None
        job = prepared.job
        lock = threading.Lock()
        settled: list[Outcome] = []

        def on_deadline() -> None:
            with lock:
                if settled:
                    return
                run.is_still_running = True
                error = JobTimeoutError(job_name=job.type, timeout=job.timeout)
                settled.append(self._settle(run, self._outcome_of(run, None, error)))
            logger.warning(
                "job %s (%s) passed its timeout of %ss; its message stays hidden and its thread keeps "
                "its slot until it returns",
                job.id,
                job.type,
                job.timeout.total_seconds(),
                extra={"job_id": job.id, "job_type": job.type},
            )

        cancel = invocation.monitor.call_at(job.timeout, on_deadline)
        result, error = call_handler(run)
        cancel()
        with lock:
            is_late = bool(settled)
            if not is_late:
                settled.append(self._settle(run, self._outcome_of(run, result, error)))
        if is_late:
            # Settled by its deadline: what the run held (its lease) was kept until now.
            for handle in reversed(run.handles):
                try:
                    handle.settle_late(run, result=result, error=error)
                except Exception:
                    logger.exception("settling the late return of job %s failed", job.id)
        _apply(apply, run.delivery, settled[0])
        return settled[0]

    def _outcome_of(self, run: Run, result: object, error: BaseException | None) -> Outcome:
        """The outcome of a handler call that returned ``result`` or raised ``error``."""
        prepared = run.prepared
        assert prepared is not None
        job = prepared.job
        run.error = error
        outcome: Outcome
        if error is None:
            outcome = _COMPLETED if result is None else Completed(result=result)
            if job_logger.isEnabledFor(logging.INFO):
                job_logger.info(
                    "job %s (%s) completed in %.3fs",
                    job.id,
                    job.type,
                    time.perf_counter() - run.started,
                    extra={"job_id": job.id, "job_type": job.type, "attempt": job.attempt},
                )
        else:
            if isinstance(error, PermanentError | MessageError):
                reason = Reason.PERMANENT_ERROR if isinstance(error, PermanentError) else error.reason
                outcome = dead_letter_of(error, reason, job.attempt, job.type, job_id=job.id)
            else:
                outcome = self._failure(
                    prepared.delivery, job.type, job.attempt, prepared.policy, error, job_id=job.id
                )
            job_logger.warning(
                "job %s (%s) attempt %d/%d failed: %s; %s",
                job.id,
                job.type,
                job.attempt,
                job.max_attempts,
                describe(error),
                next_step(outcome),
                exc_info=(type(error), error, error.__traceback__),
                extra={"job_id": job.id, "job_type": job.type, "attempt": job.attempt},
            )
        if job.cancel_signal.is_set():  # job.cancelled, without the property's call
            # A cancellation the run learnt of wins: no retry, no DLQ, whatever the handler did.
            outcome = Cancelled()
        return outcome

    def _unexpected(self, run: Run, error: BaseException) -> Outcome:
        """Something other than the handler raised: retried with backoff, dead-lettered at the end."""
        logger.error(
            "message %s: the pipeline failed outside the handler",
            run.delivery.message_id,
            exc_info=(type(error), error, error.__traceback__),
        )
        delivery, prepared = run.delivery, run.prepared
        if prepared is not None:
            job = prepared.job
            return self._failure(delivery, job.type, job.attempt, prepared.policy, error, job_id=job.id)
        job_type = attribute_of(delivery, TYPE_ATTRIBUTE)
        return self._failure(
            delivery, job_type, delivery.receive_count, self._preparation.default_policy, error
        )

    def _settle(self, run: Run, outcome: Outcome) -> Outcome:
        """Every started handle sees the outcome, innermost first; a failing hook's error is retried."""
        for handle in reversed(run.handles):
            try:
                outcome = handle.settle(run, outcome)
            except Exception as exc:
                outcome = self._unexpected(run, exc)
        return outcome

    def _end(self, run: Run, outcome: Outcome, apply: Apply | None) -> Outcome:
        if run.handles:  # most runs start none (no trace, no middleware)
            outcome = self._settle(run, outcome)
        if apply is not None:  # _apply(apply, run.delivery, outcome), one call fewer per run
            try:
                apply(run.delivery, outcome)
            except Exception:
                logger.exception("applying the outcome of message %s failed", run.delivery.message_id)
        return outcome

    # -- decisions --------------------------------------------------------------------------------

    def _failure(
        self,
        delivery: Delivery,
        job_type: str | None,
        attempt: int,
        policy: RetryPolicy,
        error: BaseException,
        *,
        exhausted: str = Reason.MAX_ATTEMPTS,
        job_id: str | None = None,
    ) -> Outcome:
        return failure_outcome(
            delivery,
            error,
            job_type=job_type,
            attempt=attempt,
            policy=policy,
            max_receive_count=self._queue.max_receive_count,
            exhausted=exhausted,
            job_id=job_id,
        )

    def _requeue_if_near_redrive(self, delivery: Delivery, envelope: Envelope, outcome: Outcome) -> Outcome:
        """A deferral must not spend the queue's receives: near the redrive threshold, send a copy."""
        limit = self._queue.max_receive_count
        if not isinstance(outcome, Deferred) or limit is None or delivery.receive_count < limit - 1:
            return outcome
        # Same job id and attempt offset; the copy's receive count starts again from zero.
        message = resend_copy(delivery, envelope, min(outcome.delay, MAX_DELAY), is_fifo=self._queue.is_fifo)
        return Deferred(delay=outcome.delay, reason=outcome.reason, requeue=message)


def _await(run: Run, invocation: Invocation) -> tuple[object, BaseException | None]:
    try:
        return invocation.run_coroutine(call_handler_async(run)), None
    except HandlerExit as exit_:
        return None, exit_.error
    except BaseException as exc:  # The attempt's failure, whatever the handler raised.
        return None, exc


def _apply(apply: Apply | None, delivery: Delivery, outcome: Outcome) -> None:
    if apply is None:
        return
    try:
        apply(delivery, outcome)
    except Exception:
        # Not applied means back after the visibility timeout: duplicated, never lost.
        logger.exception("applying the outcome of message %s failed", delivery.message_id)
