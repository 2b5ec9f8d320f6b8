"""The producer: envelopes in, batched sends out, every entry accounted for."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from pydantic import JsonValue

from cloudjobs.backends.base import (
    MAX_BATCH_ENTRIES,
    MAX_BATCH_REQUEST_SIZE,
    MAX_DELAY,
    MAX_MESSAGE_ATTRIBUTES,
    Backend,
    OutgoingMessage,
    QueueInfo,
    SendResult,
    TypedAttribute,
    message_size,
)
from cloudjobs.clock import Clock
from cloudjobs.envelope import Envelope, encode, envelope_attributes
from cloudjobs.errors import BatchEnqueueError, CloudjobsError, InvalidDelayError, PayloadTooLargeError
from cloudjobs.groups import message_group
from cloudjobs.hops import MAX_SCHEDULE_DELAY
from cloudjobs.ids import random_id
from cloudjobs.latency import is_latency_bound
from cloudjobs.payloads.pointer import Pointer, size_attribute
from cloudjobs.payloads.store import PayloadStore, object_key
from cloudjobs.queues import DEFAULT_QUEUE
from cloudjobs.telemetry.attributes import fit_attributes, is_within_budget
from cloudjobs.telemetry.correlation import correlation_id_for_enqueue
from cloudjobs.telemetry.spans import EnqueueTrace, Telemetry, default_telemetry

_RESEND_ATTEMPTS: Final = 3
SEND_CONCURRENCY: Final = 4
"""SendMessageBatch requests one call keeps in flight at once on a standard queue when its round trips
are latency-bound (see :func:`~cloudjobs.latency.is_latency_bound`), by default; a FIFO queue's
batches go one after another, in order. ``CLOUDJOBS_SEND_CONCURRENCY`` sets it (1: never
concurrent)."""


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
        flow_parent: the store key of the flow parent waiting for this job (see :mod:`cloudjobs.flows`).
        flow_route: which of a flow parent's two messages this is (``"timeout"`` or ``"early"``).
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
    flow_parent: str | None = None
    flow_route: str | None = None


class LaterSends(Protocol):
    """Sends a message at a later time through a scheduling service (the AWS mode of long delays:
    :class:`cloudjobs.scheduling.eventbridge.EventBridgeDelays`)."""

    def send_at(self, job_id: str, at: datetime, message: OutgoingMessage) -> None:
        """Arrange for ``message`` to be sent at ``at``; a repeat for one job id changes nothing.

        Raises:
            BackendError, ConfigurationError: the service refused or is not set up.
        """
        ...


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as :meth:`Producer.check` built it, kept to be sent later by :meth:`Producer.resume`.

    Attributes:
        envelope: the job's envelope (``message.body`` is its encoding, or a pointer to it when
            ``upload`` is set).
        message: the message as checked, its delay counted from ``envelope.enqueued_at``.
        send_at: set for a job handed to :class:`LaterSends` rather than sent to the queue.
        upload: for a body kept in the payload store, its key and bytes: stored when the job is
            sent, not before.
    """

    envelope: Envelope
    message: OutgoingMessage
    send_at: datetime | None = None
    upload: tuple[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    job_id: str
    message: OutgoingMessage
    size: int
    envelope: Envelope
    send_at: datetime | None = None
    """Set for a job sent later by :class:`LaterSends` rather than now to the queue."""
    upload: tuple[str, bytes] | None = None
    """For a body kept in the payload store: its key and bytes, stored before the message is sent."""

    @property
    def recorded(self) -> Envelope:
        """The envelope as its pending record sees it: with its due time when sent later."""
        if self.send_at is None:
            return self.envelope
        return dataclasses.replace(self.envelope, due_at=self.send_at)


@dataclass(frozen=True, slots=True)
class Offload:
    """Message bodies larger than ``threshold`` bytes (default: what the queue takes) go to ``store``
    and the message carries a pointer (see :mod:`cloudjobs.payloads`)."""

    store: PayloadStore
    threshold: int | None = None


@dataclass(frozen=True, slots=True)
class CheckedJobs:
    """Jobs built and checked by :meth:`Producer.check`, ready for :meth:`Producer.send`."""

    items: list[_Prepared]
    trace: EnqueueTrace

    @property
    def stored(self) -> list[StoredJob]:
        """Each job as :meth:`Producer.resume` takes it back, to be sent later."""
        return [StoredJob(item.envelope, item.message, item.send_at, item.upload) for item in self.items]


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
        later: when given, a job delayed longer than ``hop`` (and, on a FIFO queue, any delayed
            job) is handed to it to be sent when due, instead of hopping.
        offload: when given, bodies too large for the queue (or its threshold) are stored and sent
            as pointers instead of raising :class:`PayloadTooLargeError`.
        send_concurrency: SendMessageBatch requests one call keeps in flight on a standard queue
            when its first batch's round trip was latency-bound (1: one after another). Over a
            network each round trip otherwise waits for the last; against a local server on a small
            machine, sending concurrently costs more CPU than it saves time.
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
        later: LaterSends | None = None,
        offload: Offload | None = None,
        send_concurrency: int = SEND_CONCURRENCY,
    ) -> None:
        self._send_concurrency = send_concurrency
        self._hop = hop
        self._later = later
        self._offload = offload
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

    def resume(self, jobs: Sequence[StoredJob]) -> CheckedJobs:
        """Checked jobs rebuilt from what :meth:`check` built earlier, perhaps in another process
        (the outbox stores them and its relay sends them), ready for :meth:`send`.

        Nothing is built, checked or stamped again: each message keeps the body, attributes and
        trace context of its first check. The delay is what remains of it: ``delay`` less the time
        since the envelope's ``enqueued_at``.

        Raises:
            BackendError: the queue's configuration could not be read.
        """
        info = self._backend.info()
        trace = self._telemetry.resume_enqueue(info, len(jobs))
        now = self._clock.now()
        items = []
        for index, job in enumerate(jobs):
            trace.adopt(index, job.envelope)
            remaining = max(job.message.delay - (now - job.envelope.enqueued_at), timedelta(0))
            message = dataclasses.replace(job.message, delay=remaining)
            items.append(
                _Prepared(job.envelope.id, message, message.size, job.envelope, job.send_at, job.upload)
            )
        return CheckedJobs(items, trace)

    def send(self, checked: CheckedJobs) -> list[str]:
        """Send checked jobs (the second half of :meth:`enqueue`); returns job ids in order.

        On a standard queue whose round trips wait on the network, the batches of a large call are
        sent ``send_concurrency`` at a time; otherwise (and on a FIFO queue) one after another.

        Raises:
            BatchEnqueueError, BackendError: as :meth:`enqueue`.
        """
        prepared, trace = checked.items, checked.trace
        try:
            if self._before_send is not None:
                self._before_send([item.recorded for item in prepared])
            sent: list[str | None] = [None] * len(prepared)
            failures: dict[int, str] = {}
            now = [(index, item) for index, item in enumerate(prepared) if item.send_at is None]
            batches = list(_batches(now))
            for batch_sent, batch_failures in self._send_batches(batches, trace, single=len(prepared) == 1):
                for index, job_id in batch_sent.items():
                    sent[index] = job_id
                failures.update(batch_failures)
            for index, item in enumerate(prepared):
                if item.send_at is not None and self._store_bodies(
                    [(index, item)], failures, single=len(prepared) == 1
                ):
                    self._send_later(index, item, sent, failures)
            if failures:
                raise BatchEnqueueError(sent=sent, failures=failures)
        except BaseException as exc:
            trace.finish(exc)
            raise
        trace.finish()
        return [job_id for job_id in sent if job_id is not None]

    def _send_batches(
        self, batches: list[list[tuple[int, _Prepared]]], trace: EnqueueTrace, *, single: bool
    ) -> list[tuple[dict[int, str], dict[int, str]]]:
        """Each batch's sent ids and failures, by message index, in batch order.

        On a standard queue, when the first batch's round trip waited on the network far longer
        than it computed (see :func:`~cloudjobs.latency.is_latency_bound`), the other batches are sent up to
        ``send_concurrency`` at a time. The first batch raises what the service answered to the whole
        request; a later one refused as a whole fails its entries, unless nothing of the call was
        sent, when its error is raised.
        """
        lock = threading.Lock()

        def record(indices: Sequence[int], results: Sequence[SendResult]) -> None:
            with lock:
                trace.record_batch(indices, results)

        def send(batch: list[tuple[int, _Prepared]]) -> tuple[dict[int, str], dict[int, str]]:
            batch_sent: dict[int, str] = {}
            batch_failures: dict[int, str] = {}
            if stored := self._store_bodies(batch, batch_failures, single=single):
                self._send_batch(stored, batch_sent, batch_failures, record)
            return batch_sent, batch_failures

        if len(batches) < 2 or self._send_concurrency < 2 or self._backend.info().is_fifo:
            return [send(batch) for batch in batches]
        started, started_cpu = time.perf_counter(), time.thread_time()
        first = send(batches[0])
        cpu = time.thread_time() - started_cpu
        waited = time.perf_counter() - started - cpu

        def attempt(
            batch: list[tuple[int, _Prepared]],
        ) -> tuple[dict[int, str], dict[int, str]] | CloudjobsError:
            try:
                return send(batch)
            except CloudjobsError as exc:
                return exc

        rest = batches[1:]
        if is_latency_bound(waited=waited, cpu=cpu):
            with ThreadPoolExecutor(
                max_workers=min(self._send_concurrency, len(rest)), thread_name_prefix="cloudjobs-send"
            ) as pool:
                answers = [first, *pool.map(attempt, rest)]
        else:
            answers = [first, *map(attempt, rest)]
        errors = [answer for answer in answers if isinstance(answer, CloudjobsError)]
        if errors and all(isinstance(answer, CloudjobsError) or not answer[0] for answer in answers):
            raise errors[0]
        return [
            ({}, {index: str(answer) for index, _ in batch}) if isinstance(answer, CloudjobsError) else answer
            for batch, answer in zip(batches, answers, strict=True)
        ]

    def _prepare(
        self, request: EnqueueRequest, info: QueueInfo, trace: EnqueueTrace, index: int
    ) -> _Prepared:
        now = self._clock.now()
        delay = _delay_of(request, info, now, can_send_later=self._later is not None)
        later = self._later is not None and (delay > self._hop or (info.is_fifo and delay > timedelta(0)))
        envelope = Envelope(
            id=request.job_id or random_id(),
            type=request.job_type,
            payload=request.payload,
            correlation_id=correlation_id_for_enqueue(),
            enqueued_at=now,
            idempotency_key=request.idempotency_key,
            # Past SQS's 15 minutes, the job hops until it is due (see cloudjobs.hops).
            due_at=now + delay if delay > self._hop and not later else None,
            track_status=request.track_status,
            flow_parent=request.flow_parent,
            flow_route=request.flow_route,
        )
        body = encode(envelope)
        trace_attributes, system_attributes = trace.stamp(index, envelope)
        attributes = {**envelope_attributes(envelope), **trace_attributes}
        size = message_size(body, attributes)
        upload: tuple[str, bytes] | None = None
        typed: dict[str, TypedAttribute] = {}
        offload = self._offload
        if offload is not None and size > min(
            offload.threshold or info.max_message_size, info.max_message_size
        ):
            # Too large for the queue: the body goes to the payload store, a pointer to the queue.
            stored = body.encode("utf-8")
            key = object_key(request.job_type, envelope.id)
            upload = (key, stored)
            body = Pointer(offload.store.bucket, key).body()
            typed = size_attribute(len(stored))
            size = message_size(body, attributes, typed)
        count = MAX_MESSAGE_ATTRIBUTES - len(typed)  # a pointer's size attribute takes a slot
        if size > info.max_message_size or not is_within_budget(attributes, max_count=count):
            # Telemetry never fails a send: past SQS's limits its lowest-priority attributes go.
            attributes = fit_attributes(
                attributes,
                body=body,
                max_size=info.max_message_size - message_size("", {}, typed),
                max_count=count,
            )
            size = message_size(body, attributes, typed)
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
            delay=timedelta(0) if later else min(delay, self._hop),
            group_id=group_id,
            deduplication_id=deduplication_id,
            system_attributes=system_attributes,
            typed_attributes=typed,
        )
        return _Prepared(
            job_id=envelope.id,
            message=message,
            size=size,
            envelope=envelope,
            send_at=now + delay if later else None,
            upload=upload,
        )

    def _store_bodies(
        self, batch: list[tuple[int, _Prepared]], failures: dict[int, str], *, single: bool
    ) -> list[tuple[int, _Prepared]]:
        """Store the bodies of ``batch`` kept in the payload store; the entries whose body could
        not be stored fail (a single job raises), the rest are returned to be sent."""
        ready: list[tuple[int, _Prepared]] = []
        for index, item in batch:
            if item.upload is not None:
                assert self._offload is not None
                try:
                    self._offload.store.put(*item.upload)
                except CloudjobsError as exc:
                    if single:
                        raise
                    failures[index] = str(exc)
                    continue
            ready.append((index, item))
        return ready

    def _send_later(
        self, index: int, item: _Prepared, sent: list[str | None], failures: dict[int, str]
    ) -> None:
        assert self._later is not None
        assert item.send_at is not None
        try:
            self._later.send_at(item.job_id, item.send_at, item.message)
        except CloudjobsError as exc:
            if len(sent) == 1:
                raise  # one job: its own error says more than a batch report
            failures[index] = str(exc)
        else:
            sent[index] = item.job_id

    def _send_batch(
        self,
        batch: list[tuple[int, _Prepared]],
        sent: dict[int, str],
        failures: dict[int, str],
        record: Callable[[Sequence[int], Sequence[SendResult]], None],
    ) -> None:
        pending = batch
        for attempt in range(_RESEND_ATTEMPTS):
            if attempt:
                # Entries failed server-side: give the service a moment before resending them.
                time.sleep(0.05 * 2**attempt)
            results = self._backend.send([prepared.message for _, prepared in pending])
            record([index for index, _ in pending], results)
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


def _delay_of(request: EnqueueRequest, info: QueueInfo, now: datetime, *, can_send_later: bool) -> timedelta:
    """The request's delay from now (``run_at`` in the past: none).

    Raises:
        InvalidDelayError: the delay is negative or past :data:`~cloudjobs.hops.MAX_SCHEDULE_DELAY`,
            ``run_at`` is naive or given with a delay, or a FIFO queue is asked for any delay
            (unless jobs can be sent later, ``can_send_later``).
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
    if info.is_fifo and delay and not can_send_later:
        raise InvalidDelayError(
            "FIFO queues refuse per-message delays; set DelaySeconds on the queue instead, or send "
            "delayed jobs through EventBridge Scheduler (CLOUDJOBS_LONG_DELAYS=eventbridge)",
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
