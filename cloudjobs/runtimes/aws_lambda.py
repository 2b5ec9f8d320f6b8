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

A completed or cancelled record needs nothing: it is not reported. Every other outcome is carried
out by the same :class:`~cloudjobs.applier.OutcomeApplier` as the worker's (made for a batch when the
first such outcome comes), with Lambda's strategies: acknowledging leaves the record to Lambda (not
reported), and visibility changes go out as ChangeMessageVisibilityBatch calls of ten, sent as soon
as ten are waiting, so the last call before returning is small whatever the batch size (up to 10,000
records).

Each record runs on the queue its ``eventSourceARN`` names (see
:mod:`cloudjobs.runtimes.lambda_queues`): one function may sit behind several event source mappings,
and no ``CLOUDJOBS_QUEUE_URL`` is needed. Records are grouped by queue; each group has its queue's
consumer (FIFO rules, redrive threshold) and its own applier, so visibility changes go to its queue
and dead letters to its queue's DLQ. The records of a queue the app cannot describe are all reported.

The function's timeout is the hard limit: a sync handler cannot be interrupted, so a record starts
only while ``context.get_remaining_time_in_millis()`` leaves at least ``safety_margin``; records not
started are reported and released. See docs/lambda.md for permissions, FIFO rules and idempotency.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.applier import BufferedVisibility, LeftToLambda, OutcomeApplier
from cloudjobs.backends.base import Delivery
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.invocation import EventLoopThread, Invocation
from cloudjobs.outcomes import Cancelled, Completed, Outcome, Reason, Released
from cloudjobs.runtimes.lambda_events import (
    LambdaContext,
    PartialBatchResponse,
    SqsEvent,
    SqsRecord,
    delivery_from_record,
    queue_name_of,
)
from cloudjobs.runtimes.lambda_queues import SourceQueue, SourceQueues, UndescribedQueue
from cloudjobs.runtimes.ordering import applying, chains, run_chain

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

logger = logging.getLogger("cloudjobs.lambda")

DEFAULT_SAFETY_MARGIN: Final = timedelta(seconds=5)
"""Time a record needs left before it starts: its own run plus the last visibility change."""
_MILLISECOND: Final = timedelta(milliseconds=1)
_LEFT_TO_LAMBDA: Final = LeftToLambda()
_DELETED_BY_LAMBDA: Final = (Completed, Cancelled)
"""Outcomes Lambda acknowledges itself (an unreported record is deleted): nothing to apply."""


class FifoRule(enum.Enum):
    """What a failure in a FIFO batch holds back."""

    PER_GROUP = "per_group"
    """The rest of the failed record's message group is reported unrun; other groups go on."""
    STOP_AT_FIRST_FAILURE = "stop_at_first_failure"
    """AWS's documented rule: stop at the first failure and report every remaining record."""


class LambdaHandler:
    """The handler of a Lambda function behind an SQS event source mapping (``ReportBatchItemFailures``).

    Build it with :meth:`CloudJobs.lambda_handler` at module level and name it as the function's
    handler. Building does no I/O; the first record of each queue builds that queue's consumer (one
    GetQueueAttributes) and keeps it for the life of the execution environment.

    Args:
        app: the job registry; records of any of its queues run, and, when it runs on SQS, records
            of any queue the function's event source mappings name.
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
        self._queues = SourceQueues(app)
        self._executor: ThreadPoolExecutor | None = None
        # One event loop for the life of the execution environment, as in the worker: async clients
        # a handler keeps between invocations stay bound to the loop they were created on.
        self._loop = EventLoopThread("cloudjobs-lambda-event-loop")

    def __call__(self, event: SqsEvent, context: LambdaContext) -> PartialBatchResponse:
        """Run one batch; returns the records to leave on the queue, in the event's order.

        Never raises for a record or a job (raising would fail, and redeliver, the whole batch): the
        records of a queue that cannot be described (it does not exist, access is denied, the app
        does not know it), and a record that cannot be read, are reported with an ERROR log.
        """
        records = event["Records"]
        if not records:
            return {"batchItemFailures": []}
        # Compared with the context's milliseconds before each record, without a timedelta each time.
        margin_ms = self.safety_margin / _MILLISECOND
        if context.get_remaining_time_in_millis() < margin_ms:
            logger.error(
                "invocation started with %d ms left, below the safety margin of %d ms: no record can "
                "start; raise the function's timeout or lower safety_margin",
                context.get_remaining_time_in_millis(),
                self.safety_margin // _MILLISECOND,
            )
        # One batch comes from one event source mapping, but nothing forbids a mix: group by queue.
        by_source: dict[str, list[SqsRecord]] = {}
        for record in records:
            by_source.setdefault(record.get("eventSourceARN", ""), []).append(record)
        reported: set[str] = set()
        not_started = 0
        for arn, group in by_source.items():
            source = self._queues.resolve(arn)
            if isinstance(source, UndescribedQueue):
                _log_undescribed(source, len(group))
                reported.update(record["messageId"] for record in group)
                continue
            batch = _Batch(self, source, context, margin_ms)
            reported |= batch.run(
                _deliveries(group, reported, queue=queue_name_of(arn), is_fifo=source.consumer.queue.is_fifo)
            )
            not_started += batch.not_started
        if not_started:
            logger.warning(
                "%d of %d records not started: the invocation's time budget was spent; they are "
                "released for another invocation",
                not_started,
                len(records),
            )
        if not reported:  # the common batch: every record ran, none stays
            return {"batchItemFailures": []}
        return {
            "batchItemFailures": [
                {"itemIdentifier": record["messageId"]}
                for record in records
                if record["messageId"] in reported
            ]
        }

    def close(self) -> None:
        """Stop the threads and event loop this handler started, and close the clients of queues it
        found from records (for tests; Lambda never needs it)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._loop.close()
        self._queues.close()

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


def _remaining(context: LambdaContext) -> timedelta:
    return timedelta(milliseconds=context.get_remaining_time_in_millis())


def _deliveries(records: list[SqsRecord], reported: set[str], *, queue: str, is_fifo: bool) -> list[Delivery]:
    """The records as deliveries. A record that cannot be read (a field missing or malformed) is
    added to ``reported`` instead: it comes back, and the queue's redrive policy ends it. On a FIFO
    queue so is every record after it, unrun: its message group is not known, and order must hold."""
    deliveries = []
    for index, record in enumerate(records):
        try:
            deliveries.append(delivery_from_record(record, queue))
        except (KeyError, TypeError, ValueError) as exc:
            held_back = records[index + 1 :] if is_fifo else []
            logger.error(
                "record %s cannot be read (%s: %s); reported%s",
                record["messageId"],
                type(exc).__name__,
                exc,
                f" with the {len(held_back)} records after it (FIFO)" if held_back else "",
            )
            reported.add(record["messageId"])
            if is_fifo:
                reported.update(later["messageId"] for later in held_back)
                break
    return deliveries


def _log_undescribed(queue: UndescribedQueue, count: int) -> None:
    is_bug = queue.error is not None and not isinstance(queue.error, CloudjobsError)
    logger.error(
        "queue %r cannot be described (%s): its %d record(s) in this invocation are reported",
        queue.name,
        queue.reason,
        count,
        exc_info=queue.error if is_bug else None,
        extra={"queue": queue.name},
    )


class _Batch:
    """The records of one invocation from one queue: runs them through that queue's consumer and
    gathers what to report."""

    def __init__(
        self, handler: LambdaHandler, source: SourceQueue, context: LambdaContext, margin_ms: float
    ) -> None:
        self._handler = handler
        self._source = source
        self._consumer = source.consumer
        self._context = context
        self._margin_ms = margin_ms
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        self.not_started = 0
        # A FIFO queue under STOP_AT_FIRST_FAILURE runs the batch as one chain in its order, whose
        # first reported record holds back all that follow; otherwise each group is a chain.
        self._is_one_chain = (
            self._consumer.queue.is_fifo and handler.fifo_rule is FifoRule.STOP_AT_FIRST_FAILURE
        )
        # Made by the first outcome that is not a completion (most batches have none).
        self._applier: OutcomeApplier | None = None
        self._visibility: BufferedVisibility | None = None
        # No run outlives the invocation: a lease taken for a record lasts as long as it can run.
        self._invocation = Invocation(loop=handler._loop, time_left=self._remaining)

    def run(self, deliveries: list[Delivery]) -> set[str]:
        """Run the records; returns the message ids of those to report (left on the queue)."""
        if not deliveries:
            return set()
        self._consumer.begin_batch(deliveries)
        if self._handler.concurrency == 1 and not self._consumer.queue.is_fifo:
            # Every record of a standard queue is a chain of its own: run them in order, without
            # making the chains.
            for delivery in deliveries:
                self._run_one(delivery)
        else:
            work = [deliveries] if self._is_one_chain else chains(deliveries)
            self._handler._map(self._run_chain, work)
        if self._visibility is not None:
            self._visibility.flush()
        return self._reported

    def _run_one(self, delivery: Delivery) -> None:
        """A record with nothing behind it to hold back: whether it stays on the queue matters to no
        record after it, so the pipeline applies its outcome itself, without a chain's wrapper."""
        if self._context.get_remaining_time_in_millis() < self._margin_ms:
            self._release(delivery)
        else:
            self._consumer.run(delivery, self._invocation, self._apply)

    def _run_chain(self, chain: list[Delivery]) -> None:
        if len(chain) == 1:  # every record of a standard queue, a FIFO group's only record
            self._run_one(chain[0])
            return
        # Why a chain's records after one that stays are held back.
        reason = Reason.FIFO_BATCH_STOPPED if self._is_one_chain else Reason.FIFO_GROUP_BLOCKED
        run = applying(self._consumer, self._invocation, self._apply)

        def process(delivery: Delivery) -> tuple[Outcome, bool]:
            if self._context.get_remaining_time_in_millis() < self._margin_ms:
                return self._release(delivery)
            return run(delivery)

        for _ in run_chain(chain, process, self._apply, reason=reason):
            pass

    def _release(self, delivery: Delivery) -> tuple[Outcome, bool]:
        """A record the time budget leaves no room for: released unrun."""
        with self._lock:
            self.not_started += 1
        released = Released(reason=Reason.TIME_BUDGET)
        return released, self._apply(delivery, released)

    def _apply(self, delivery: Delivery, outcome: Outcome) -> bool:
        if isinstance(outcome, _DELETED_BY_LAMBDA):
            return False  # not reported: Lambda deletes it
        stays = self._outcome_applier().apply(delivery, outcome)
        if stays:
            with self._lock:
                self._reported.add(delivery.message_id)
        return stays

    def _outcome_applier(self) -> OutcomeApplier:
        with self._lock:
            if self._applier is None:
                backend = self._source.backend
                self._visibility = BufferedVisibility(backend, self._remaining)
                self._applier = OutcomeApplier(
                    backend, self._handler._app.clock, acknowledging=_LEFT_TO_LAMBDA, hiding=self._visibility
                )
            return self._applier

    def _remaining(self) -> timedelta:
        return _remaining(self._context)
