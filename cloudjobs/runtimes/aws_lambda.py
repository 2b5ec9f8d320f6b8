"""The Lambda runtime: an SQS event source mapping's batch in, a partial batch response out.

``handler = jobs.lambda_handler()`` turns each record into a :class:`~cloudjobs.backends.base.Delivery`,
runs it through the same consumer core as the ECS worker, and applies the outcome the Lambda way:

=============== ======================================================================
outcome         on Lambda
=============== ======================================================================
``Completed``   not reported: Lambda deletes it
``Cancelled``   not reported: Lambda deletes it
``DeadLetter``  sent to the DLQ with its reason, then not reported (reported if the send fails)
``Retry``       reported; visibility set to the backoff delay
``Deferred``    reported; visibility set to the delay (or re-sent, then not reported)
``Released``    reported; visibility 0 (FIFO group blocked, time budget spent)
=============== ======================================================================

Visibility changes go out as ChangeMessageVisibilityBatch calls of ten, sent as soon as ten are
waiting, so the last call before returning is small whatever the batch size (up to 10,000 records).

The function's timeout is the hard limit: a sync handler cannot be interrupted, so a record starts
only while ``context.get_remaining_time_in_millis()`` leaves at least ``safety_margin``; records not
started are reported and released. See docs/lambda.md for permissions, FIFO rules and idempotency.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Final, TypeVar

from cloudjobs.backends.base import MAX_BATCH_ENTRIES, Backend, Delivery, OutgoingMessage
from cloudjobs.consumer import Consumer, Prepared
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.outcomes import (
    Cancelled,
    Completed,
    DeadLetter,
    Deferred,
    Outcome,
    Released,
    Retry,
    dead_letter_attributes,
)
from cloudjobs.run_lease import runs_end_within
from cloudjobs.runtimes.lambda_events import (
    BatchItemFailure,
    LambdaContext,
    PartialBatchResponse,
    SqsEvent,
    SqsRecord,
    delivery_from_record,
    queue_name_of,
)
from cloudjobs.runtimes.ordering import chains, lets_group_continue

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.lambda")

T = TypeVar("T")

DEFAULT_SAFETY_MARGIN: Final = timedelta(seconds=5)
"""Time a record needs left before it starts: its own run plus the last visibility change."""
_FLUSH_RESERVE: Final = timedelta(milliseconds=500)
"""Below this much time left, visibility changes still waiting are skipped (see ``_flush``)."""
_TIME_BUDGET: Final = "time_budget"
_GROUP_BLOCKED: Final = "fifo_group_blocked"
_BATCH_STOPPED: Final = "fifo_batch_stopped"


class FifoRule(enum.Enum):
    """What a failure in a FIFO batch holds back."""

    PER_GROUP = "per_group"
    """The rest of the failed record's message group is reported unrun; other groups go on."""
    STOP_AT_FIRST_FAILURE = "stop_at_first_failure"
    """AWS's documented rule: stop at the first failure and report every remaining record."""


class LambdaHandler:
    """The handler of a Lambda function behind an SQS event source mapping (``ReportBatchItemFailures``).

    Build it with :meth:`CloudJobs.lambda_handler` at module level and name it as the function's
    handler. Building does no I/O; the first invocation builds the consumer (one GetQueueAttributes)
    and keeps it for the life of the execution environment.

    Args:
        app: the job registry; its backend (``CLOUDJOBS_QUEUE_URL``) must be the mapping's queue.
        fifo_rule: what a failure holds back on a FIFO queue.
        safety_margin: the least remaining time at which a record may still start.
        concurrency: records run at once in one invocation, in threads (I/O-bound handlers). A FIFO
            message group always runs in order in one thread; with ``STOP_AT_FIRST_FAILURE`` the
            whole FIFO batch does.

    Raises:
        ConfigurationError: ``concurrency`` is below 1 or ``safety_margin`` is negative.
    """

    def __init__(
        self,
        app: CloudJobs,
        *,
        fifo_rule: FifoRule = FifoRule.PER_GROUP,
        safety_margin: timedelta = DEFAULT_SAFETY_MARGIN,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1", setting="concurrency")
        if safety_margin < timedelta(0):
            raise ConfigurationError("safety_margin must not be negative", setting="safety_margin")
        self._app = app
        self.fifo_rule = fifo_rule
        self.safety_margin = safety_margin
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    def __call__(self, event: SqsEvent, context: LambdaContext) -> PartialBatchResponse:
        """Run one batch; returns the records to leave on the queue.

        Never raises for a job's failure; raises (failing the whole batch, which Lambda retries) only
        when the app cannot consume this queue at all.

        Raises:
            ConfigurationError: the records come from another queue than the app's backend.
            BackendError: the queue's configuration could not be read (first invocation only).
        """
        records = event["Records"]
        if not records:
            return {"batchItemFailures": []}
        consumer = self._consumer_for(records)
        deliveries = [delivery_from_record(record) for record in records]
        batch = _Batch(self, consumer, context)
        batch.run(deliveries)
        return {"batchItemFailures": batch.failures()}

    def close(self) -> None:
        """Stop the threads and event loop this handler started (for tests; Lambda never needs it)."""
        with self._lock:
            executor, self._executor = self._executor, None
            loop, self._loop = self._loop, None
            loop_thread, self._loop_thread = self._loop_thread, None
        if executor is not None:
            executor.shutdown(wait=True)
        if loop is not None and loop_thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            loop_thread.join()
            loop.close()

    # -- internals --------------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend that visibility changes and dead letters go to (the app's)."""
        return self._app.backend

    def _consumer_for(self, records: Sequence[SqsRecord]) -> Consumer:
        with self._lock:
            if self._consumer is None:
                self._consumer = self._app.consumer()
            consumer = self._consumer
        expected = consumer.queue.name
        for record in records:
            source = queue_name_of(record["eventSourceARN"])
            if source != expected:
                # Receipts of another queue would be refused by every call we make: fail loudly.
                raise ConfigurationError(
                    f"records come from queue {source!r} but the app consumes {expected!r}; "
                    "set CLOUDJOBS_QUEUE_URL to the event source mapping's queue",
                    setting="CLOUDJOBS_QUEUE_URL",
                )
        return consumer

    def _map(self, function: Callable[[list[Delivery]], None], work: list[list[Delivery]]) -> None:
        if self.concurrency == 1 or len(work) == 1:
            for chain in work:
                function(chain)
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="cloudjobs-lambda")
            executor = self._executor
        for future in [executor.submit(function, chain) for chain in work]:
            future.result()

    def _run_coroutine(self, coroutine: Coroutine[object, object, T]) -> T:
        # One event loop for the life of the execution environment, as in the worker: async clients
        # a handler keeps between invocations stay bound to the loop they were created on.
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(
                    target=self._loop.run_forever, name="cloudjobs-lambda-event-loop", daemon=True
                )
                self._loop_thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


class _Batch:
    """One invocation's records: runs them and gathers what to report and what to hide."""

    def __init__(self, handler: LambdaHandler, consumer: Consumer, context: LambdaContext) -> None:
        self._handler = handler
        self._consumer = consumer
        self._context = context
        self._backend = handler.backend
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        self._pending: list[tuple[str, timedelta]] = []
        self._not_started = 0
        self._order: list[str] = []
        self._blocked_reason = _GROUP_BLOCKED

    def run(self, deliveries: list[Delivery]) -> None:
        self._order = [delivery.message_id for delivery in deliveries]
        is_fifo = self._consumer.queue.is_fifo
        if is_fifo and self._handler.fifo_rule is FifoRule.STOP_AT_FIRST_FAILURE:
            # One chain in the batch's order: the first reported record holds back all that follow.
            work = [deliveries]
            self._blocked_reason = _BATCH_STOPPED
        else:
            work = chains(deliveries)
        if self._remaining() < self._handler.safety_margin:
            logger.error(
                "invocation started with %d ms left, below the safety margin of %d ms: no record can "
                "start; raise the function's timeout or lower safety_margin",
                self._context.get_remaining_time_in_millis(),
                self._handler.safety_margin // timedelta(milliseconds=1),
            )
        self._handler._map(self.run_chain, work)
        self._flush(final=True)
        if self._not_started:
            logger.warning(
                "%d of %d records not started: the invocation's time budget was spent; they are "
                "released for another invocation",
                self._not_started,
                len(deliveries),
            )

    def run_chain(self, chain: list[Delivery]) -> None:
        """Run records in order; once one is reported, the rest of the chain is reported unrun."""
        blocked = False
        for delivery in chain:
            outcome: Outcome | None
            if blocked:
                outcome = Released(reason=self._blocked_reason)
            elif self._remaining() < self._handler.safety_margin:
                outcome = Released(reason=_TIME_BUDGET)
                with self._lock:
                    self._not_started += 1
            else:
                outcome = self._process(delivery)
            is_reported = self._apply(delivery, outcome)
            if is_reported or outcome is None or not lets_group_continue(outcome):
                blocked = True

    def failures(self) -> list[BatchItemFailure]:
        """The reported records, in the batch's order."""
        return [{"itemIdentifier": message_id} for message_id in self._order if message_id in self._reported]

    # -- running ----------------------------------------------------------------------------------

    def _process(self, delivery: Delivery) -> Outcome | None:
        """The consumer's outcome, or None when something outside the handler failed unexpectedly."""
        consumer = self._consumer
        # An idempotency lease taken for this record lasts as long as the invocation can still run.
        with runs_end_within(self._remaining()):
            return self._run_record(consumer, delivery)

    def _run_record(self, consumer: Consumer, delivery: Delivery) -> Outcome | None:
        try:
            prepared = consumer.prepare(delivery)
            if not isinstance(prepared, Prepared):
                return prepared
            try:
                if prepared.definition.is_async:
                    result = self._handler._run_coroutine(consumer.call_async(prepared))
                else:
                    result = consumer.call(prepared)
            except Exception as exc:
                logger.info("job %s (%s) failed: %s", prepared.job.id, prepared.job.type, exc)
                return consumer.settle(prepared, error=exc)
            return consumer.settle(prepared, result=result)
        except Exception:
            # Never let one record fail the whole batch: it is reported and comes back later.
            logger.exception("handling message %s failed", delivery.message_id)
            return None

    def _remaining(self) -> timedelta:
        return timedelta(milliseconds=self._context.get_remaining_time_in_millis())

    # -- applying ---------------------------------------------------------------------------------

    def _apply(self, delivery: Delivery, outcome: Outcome | None) -> bool:
        """Carry out an outcome; returns whether the record is reported (left on the queue)."""
        match outcome:
            case Completed() | Cancelled():
                return False
            case DeadLetter():
                if self._dead_letter(delivery, outcome):
                    return False
            case Retry(delay=delay) | Deferred(delay=delay, requeue=None):
                self._hide(delivery, delay)
            case Deferred(delay=delay, requeue=OutgoingMessage() as copy):
                if self._requeue(delivery, copy):
                    return False
                self._hide(delivery, delay)
            case Released():
                self._hide(delivery, timedelta(0))
            case None:
                pass  # left as it is: back after the queue's visibility timeout
        self._report(delivery)
        return True

    def _report(self, delivery: Delivery) -> None:
        with self._lock:
            self._reported.add(delivery.message_id)

    def _dead_letter(self, delivery: Delivery, outcome: DeadLetter) -> bool:
        attributes = dead_letter_attributes(outcome, failed_at=self._handler._app.clock.now())
        try:
            self._backend.dead_letter(delivery, attributes)
        except CloudjobsError:
            # Reported, so Lambda keeps it: the queue's own redrive policy still moves it later.
            logger.exception("dead-lettering message %s failed; it stays on the queue", delivery.message_id)
            return False
        logger.warning(
            "message %s dead-lettered: %s (%s)",
            delivery.message_id,
            outcome.reason,
            outcome.error,
            extra={"job_type": outcome.job_type, "reason": outcome.reason},
        )
        return True

    def _requeue(self, delivery: Delivery, copy: OutgoingMessage) -> bool:
        try:
            [result] = self._backend.send([copy])
        except CloudjobsError:
            logger.exception("re-sending deferred message %s failed", delivery.message_id)
            return False
        if not result.is_sent:
            logger.error("re-sending deferred message %s refused: %s", delivery.message_id, result.error)
        return result.is_sent

    def _hide(self, delivery: Delivery, delay: timedelta) -> None:
        with self._lock:
            self._pending.append((delivery.receipt, delay))
            if len(self._pending) < MAX_BATCH_ENTRIES:
                return
        self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        """Send waiting visibility changes in calls of ten (all of them when ``final``)."""
        while True:
            with self._lock:
                if len(self._pending) < (1 if final else MAX_BATCH_ENTRIES):
                    return
                if self._remaining() < _FLUSH_RESERVE:
                    skipped, self._pending = len(self._pending), []
                    logger.warning(
                        "%d visibility changes skipped, the invocation is about to time out; those "
                        "messages reappear after the queue's visibility timeout",
                        skipped,
                    )
                    return
                chunk = self._pending[:MAX_BATCH_ENTRIES]
                del self._pending[:MAX_BATCH_ENTRIES]
            self._change_visibility(chunk)

    def _change_visibility(self, chunk: list[tuple[str, timedelta]]) -> None:
        try:
            gone = self._backend.change_visibility(chunk)
        except CloudjobsError:
            # Still reported: they come back after the queue's visibility timeout instead.
            logger.exception("changing the visibility of %d messages failed", len(chunk))
            return
        if gone:
            # Already back on the queue or deleted: reporting them is harmless.
            logger.info("%d messages were no longer in flight for their visibility change", len(gone))
