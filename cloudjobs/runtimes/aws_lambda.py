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

The outcomes are carried out by the same :class:`~cloudjobs.applier.OutcomeApplier` as the worker's,
with Lambda's strategies: acknowledging leaves the record to Lambda (not reported), and visibility
changes go out as ChangeMessageVisibilityBatch calls of ten, sent as soon as ten are waiting, so the
last call before returning is small whatever the batch size (up to 10,000 records).

The function's timeout is the hard limit: a sync handler cannot be interrupted, so a record starts
only while ``context.get_remaining_time_in_millis()`` leaves at least ``safety_margin``; records not
started are reported and released. See docs/lambda.md for permissions, FIFO rules and idempotency.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.applier import BufferedVisibility, LeftToLambda, OutcomeApplier
from cloudjobs.backends.base import Backend, Delivery
from cloudjobs.consumer import Consumer
from cloudjobs.errors import ConfigurationError
from cloudjobs.invocation import EventLoopThread, Invocation
from cloudjobs.outcomes import Outcome, Reason, Released
from cloudjobs.runtimes.lambda_events import (
    BatchItemFailure,
    LambdaContext,
    PartialBatchResponse,
    SqsEvent,
    SqsRecord,
    delivery_from_record,
    queue_name_of,
)
from cloudjobs.runtimes.ordering import applying, chains, run_chain

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.lambda")

DEFAULT_SAFETY_MARGIN: Final = timedelta(seconds=5)
"""Time a record needs left before it starts: its own run plus the last visibility change."""


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
        # One event loop for the life of the execution environment, as in the worker: async clients
        # a handler keeps between invocations stay bound to the loop they were created on.
        self._loop = EventLoopThread("cloudjobs-lambda-event-loop")

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
        return {"batchItemFailures": _Batch(self, consumer, context).run(deliveries)}

    def close(self) -> None:
        """Stop the threads and event loop this handler started (for tests; Lambda never needs it)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._loop.close()

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


class _Batch:
    """One invocation's records: runs them through the pipeline and gathers what to report."""

    def __init__(self, handler: LambdaHandler, consumer: Consumer, context: LambdaContext) -> None:
        self._handler = handler
        self._consumer = consumer
        self._context = context
        self._visibility = BufferedVisibility(handler.backend, self._remaining)
        self._applier = OutcomeApplier(
            handler.backend, handler._app.clock, acknowledging=LeftToLambda(), hiding=self._visibility
        )
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        self._not_started = 0
        # No run outlives the invocation: a lease taken for a record lasts as long as it can run.
        invocation = Invocation(loop=handler._loop, time_left=self._remaining)
        self._run = applying(consumer, invocation, self._apply)

    def run(self, deliveries: list[Delivery]) -> list[BatchItemFailure]:
        """Run the records; returns those to report (left on the queue), in the batch's order."""
        reason = Reason.FIFO_GROUP_BLOCKED
        if self._consumer.queue.is_fifo and self._handler.fifo_rule is FifoRule.STOP_AT_FIRST_FAILURE:
            # One chain in the batch's order: the first reported record holds back all that follow.
            work, reason = [deliveries], Reason.FIFO_BATCH_STOPPED
        else:
            work = chains(deliveries)
        if self._remaining() < self._handler.safety_margin:
            logger.error(
                "invocation started with %d ms left, below the safety margin of %d ms: no record can "
                "start; raise the function's timeout or lower safety_margin",
                self._context.get_remaining_time_in_millis(),
                self._handler.safety_margin // timedelta(milliseconds=1),
            )
        self._consumer.prefetch(deliveries)
        self._handler._map(lambda chain: self._run_chain(chain, reason), work)
        self._visibility.flush()
        if self._not_started:
            logger.warning(
                "%d of %d records not started: the invocation's time budget was spent; they are "
                "released for another invocation",
                self._not_started,
                len(deliveries),
            )
        return [
            {"itemIdentifier": delivery.message_id}
            for delivery in deliveries
            if delivery.message_id in self._reported
        ]

    def _run_chain(self, chain: list[Delivery], reason: Reason) -> None:
        for _ in run_chain(chain, self._process, self._apply, reason=reason):
            pass

    def _process(self, delivery: Delivery) -> tuple[Outcome, bool]:
        if self._remaining() < self._handler.safety_margin:
            with self._lock:
                self._not_started += 1
            released = Released(reason=Reason.TIME_BUDGET)
            return released, self._apply(delivery, released)
        return self._run(delivery)

    def _apply(self, delivery: Delivery, outcome: Outcome) -> bool:
        stays = self._applier.apply(delivery, outcome)
        if stays:
            with self._lock:
                self._reported.add(delivery.message_id)
        return stays

    def _remaining(self) -> timedelta:
        return timedelta(milliseconds=self._context.get_remaining_time_in_millis())
