"""The producer: envelopes in, batched sends out, every entry accounted for."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from pydantic import JsonValue

from cloudjobs.backends.base import (
    MAX_BATCH_ENTRIES,
    MAX_BATCH_REQUEST_SIZE,
    MAX_DELAY,
    Backend,
    OutgoingMessage,
    QueueInfo,
    message_size,
)
from cloudjobs.clock import Clock
from cloudjobs.envelope import Envelope, encode, envelope_attributes
from cloudjobs.errors import BatchEnqueueError, InvalidDelayError, PayloadTooLargeError
from cloudjobs.groups import message_group
from cloudjobs.hops import MAX_SCHEDULE_DELAY
from cloudjobs.queues import DEFAULT_QUEUE
from cloudjobs.telemetry.propagation import correlation_id_for_enqueue, fit_attributes, is_within_budget
from cloudjobs.telemetry.spans import EnqueueTrace, Telemetry, default_telemetry

_RESEND_ATTEMPTS: Final = 3


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One job to enqueue, with its JSON payload already serialised.

    Attributes:
        queue: the name of the app's queue it goes to (see :mod:`cloudjobs.queues`).
        run_at: when the job is due (timezone-aware), instead of ``delay``.
        tenant: the fairness key, sent as the message group (see :mod:`cloudjobs.groups`).
        job_id: the job id to send under (default: a new UUID); a schedule's fire derives it from
            the tick, so that every fire of one tick is one job.
        track_status: keep a status record (and result) for this job alone (carried in the envelope).
    """

    job_type: str
    payload: JsonValue
    delay: timedelta = timedelta(0)
    idempotency_key: str | None = None
    group_id: str | None = None
    deduplication_id: str | None = None
    queue: str = DEFAULT_QUEUE
    tenant: str | None = None
    run_at: datetime | None = None
    job_id: str | None = None
    track_status: bool = False


@dataclass(frozen=True, slots=True)
class _Prepared:
    job_id: str
    message: OutgoingMessage
    size: int
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class CheckedJobs:
    """Jobs built and checked by :meth:`Producer.check`, ready for :meth:`Producer.send`."""

    items: list[_Prepared]
    trace: EnqueueTrace


class Producer:
    """Builds envelopes and sends them through a backend in batches of ten within 1 MiB.

    Args:
        backend: where messages go.
        clock: the time written as ``enqueued_at``.
        default_group_id: FIFO MessageGroupId when a request names none (else the job type).
        telemetry: spans, metrics and trace propagation (default: on, through the global providers).
        before_send: called with every envelope once all are built and checked, before the first
            send (the app writes pending status records there); what it raises fails the call.
        hop: a job delayed longer than this hops until it is due (SQS's 900 s; see
            :mod:`cloudjobs.hops`).
    """

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        *,
        default_group_id: str | None = None,
        telemetry: Telemetry | None = None,
        before_send: Callable[[Sequence[Envelope]], None] | None = None,
        hop: timedelta = MAX_DELAY,
    ) -> None:
        self._hop = hop
        self._before_send = before_send
        self._backend = backend
        self._clock = clock
        self._default_group_id = default_group_id
        self._telemetry = telemetry or default_telemetry()

    def enqueue(self, requests: Sequence[EnqueueRequest]) -> list[str]:
        """Send every request; returns job ids in request order.

        Every message is built and checked before any is sent, so a request that cannot be sent
        (too large, bad delay) fails the call without sending the others.

        Raises:
            PayloadTooLargeError: a message exceeds the queue's size limit.
            InvalidDelayError: a delay is outside 0–900 s, or set on a FIFO queue.
            InvalidGroupIdError: a group id SQS refuses, or a group and a tenant that differ.
            BatchEnqueueError: entries still failed after resending; the others were sent.
            BackendError: the queue refused the whole request.
        """
        return self.send(self.check(requests))

    def check(self, requests: Sequence[EnqueueRequest]) -> CheckedJobs:
        """Build and check every request's message, sending nothing (the first half of
        :meth:`enqueue`; pass the result to :meth:`send`).

        Raises:
            PayloadTooLargeError, InvalidDelayError, InvalidGroupIdError: as :meth:`enqueue`.
            BackendError: the queue's configuration could not be read.
        """
        info = self._backend.info()
        trace = self._telemetry.start_enqueue(info, len(requests))
        try:
            prepared = [self._prepare(request, info, trace, index) for index, request in enumerate(requests)]
        except BaseException as exc:
            trace.finish(exc)
            raise
        return CheckedJobs(prepared, trace)

    def send(self, checked: CheckedJobs) -> list[str]:
        """Send checked jobs (the second half of :meth:`enqueue`); returns job ids in order.

        Raises:
            BatchEnqueueError, BackendError: as :meth:`enqueue`.
        """
        prepared, trace = checked.items, checked.trace
        try:
            if self._before_send is not None:
                self._before_send([item.envelope for item in prepared])
            sent: list[str | None] = [None] * len(prepared)
            failures: dict[int, str] = {}
            for batch in _batches(list(enumerate(prepared))):
                self._send_batch(batch, sent, failures, trace)
            if failures:
                raise BatchEnqueueError(sent=sent, failures=failures)
        except BaseException as exc:
            trace.finish(exc)
            raise
        trace.finish()
        return [job_id for job_id in sent if job_id is not None]

    def _prepare(
        self, request: EnqueueRequest, info: QueueInfo, trace: EnqueueTrace, index: int
    ) -> _Prepared:
        now = self._clock.now()
        delay = _delay_of(request, info, now)
        envelope = Envelope(
            id=request.job_id or str(uuid.uuid4()),
            type=request.job_type,
            payload=request.payload,
            correlation_id=correlation_id_for_enqueue(),
            enqueued_at=now,
            idempotency_key=request.idempotency_key,
            # Past SQS's 15 minutes, the job hops until it is due (see cloudjobs.hops).
            due_at=now + delay if delay > self._hop else None,
            track_status=request.track_status,
        )
        body = encode(envelope)
        trace_attributes, system_attributes = trace.stamp(index, envelope)
        attributes = {**envelope_attributes(envelope), **trace_attributes}
        size = message_size(body, attributes)
        if size > info.max_message_size or not is_within_budget(attributes):
            # Telemetry never fails a send: past SQS's limits its lowest-priority attributes go.
            attributes = fit_attributes(attributes, body=body, max_size=info.max_message_size)
            size = message_size(body, attributes)
        if size > info.max_message_size:
            raise PayloadTooLargeError(job_name=request.job_type, size=size, limit=info.max_message_size)
        group_id = message_group(
            is_fifo=info.is_fifo,
            job_type=request.job_type,
            group_id=request.group_id,
            tenant=request.tenant,
            default_group_id=self._default_group_id,
        )
        deduplication_id = None
        if info.is_fifo:
            # The job id as deduplication id: a resend of this very entry is dropped by SQS,
            # while two enqueues of equal payloads stay two jobs.
            deduplication_id = request.deduplication_id or envelope.id
        message = OutgoingMessage(
            body=body,
            attributes=attributes,
            delay=min(delay, self._hop),
            group_id=group_id,
            deduplication_id=deduplication_id,
            system_attributes=system_attributes,
        )
        return _Prepared(job_id=envelope.id, message=message, size=size, envelope=envelope)

    def _send_batch(
        self,
        batch: list[tuple[int, _Prepared]],
        sent: list[str | None],
        failures: dict[int, str],
        trace: EnqueueTrace,
    ) -> None:
        pending = batch
        for attempt in range(_RESEND_ATTEMPTS):
            if attempt:
                # Entries failed server-side: give the service a moment before resending them.
                time.sleep(0.05 * 2**attempt)
            results = self._backend.send([prepared.message for _, prepared in pending])
            trace.record_batch([index for index, _ in pending], results)
            retry: list[tuple[int, _Prepared]] = []
            for (index, prepared), result in zip(pending, results, strict=True):
                if result.is_sent:
                    sent[index] = prepared.job_id
                    failures.pop(index, None)
                else:
                    failures[index] = result.error or "unknown error"
                    if result.retryable:
                        retry.append((index, prepared))
            if not retry:
                return
            pending = retry


def _delay_of(request: EnqueueRequest, info: QueueInfo, now: datetime) -> timedelta:
    """The request's delay from now (``run_at`` in the past: none).

    Raises:
        InvalidDelayError: the delay is negative or past :data:`~cloudjobs.hops.MAX_SCHEDULE_DELAY`,
            ``run_at`` is naive or given with a delay, or a FIFO queue is asked for any delay.
    """
    delay = request.delay
    if request.run_at is not None:
        if request.run_at.tzinfo is None or request.run_at.utcoffset() is None:
            raise InvalidDelayError(
                "run_at must be timezone-aware (a naive datetime has no single meaning)",
                delay=timedelta(0),
                queue=info.name,
            )
        if delay:
            raise InvalidDelayError("give a delay or run_at, not both", delay=delay, queue=info.name)
        delay = max(request.run_at - now, timedelta(0))
    if not timedelta(0) <= delay <= MAX_SCHEDULE_DELAY:
        raise InvalidDelayError(
            f"delay of {delay.total_seconds():g}s is outside 0 s – {MAX_SCHEDULE_DELAY.days} days",
            delay=delay,
            queue=info.name,
        )
    if info.is_fifo and delay:
        raise InvalidDelayError(
            "FIFO queues refuse per-message delays; set DelaySeconds on the queue instead",
            delay=delay,
            queue=info.name,
        )
    return delay


def _batches(items: list[tuple[int, _Prepared]]) -> Iterator[list[tuple[int, _Prepared]]]:
    batch: list[tuple[int, _Prepared]] = []
    size = 0
    for item in items:
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + item[1].size > MAX_BATCH_REQUEST_SIZE):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item[1].size
    if batch:
        yield batch
