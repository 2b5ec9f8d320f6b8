"""The queue each Lambda record comes from, found from its ``eventSourceARN`` once per queue.

One function may sit behind several event source mappings, one per queue (each batch comes from one
of them), so a record's queue is its ARN's, never a setting. It is, in this order:

1. the app's queue of that SQS name (the default queue or a named one), with the app's backend for
   it: matched by name, with no I/O for SQS and memory backends;
2. when the app runs on SQS (every queue it configures is an SqsBackend, or it configures none), a
   new SqsBackend on the ARN's queue, its URL built from the ARN, its dead-letter queue and redrive
   threshold from its own redrive policy.

The first record of a queue builds its consumer, which reads the queue's configuration once
(GetQueueAttributes: FIFO, visibility timeout, redrive policy); it is kept, with its backend, for the
life of the execution environment. A queue that cannot be described (it does not exist, access is
denied, the app does not know it) is not remembered: a later invocation tries again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from cloudjobs.aws_defaults import build_event_source_backend
from cloudjobs.backends import is_memory_backend
from cloudjobs.backends.base import Backend
from cloudjobs.consumer import Consumer
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.queues import QueueArn

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs
    from cloudjobs.backends.sqs import SqsBackend


@dataclass(frozen=True, slots=True)
class SourceQueue:
    """A queue records come from: the backend their outcomes go to, and the consumer that runs them.

    Attributes:
        backend: where visibility changes and dead letters go.
        consumer: the consumer core on this queue's configuration.
        app_queue: the app's name for the queue (``default``, a named queue), or None for a queue
            found from its ARN only.
    """

    backend: Backend
    consumer: Consumer
    app_queue: str | None = None


@dataclass(frozen=True, slots=True)
class UndescribedQueue:
    """A queue the app cannot consume records from: every record of it is reported.

    Attributes:
        name: the queue's name (the whole ARN when it names no SQS queue).
        reason: why, for the log.
        error: what describing it raised, when that was not one of cloudjobs' errors (a bug to
            log with its traceback).
    """

    name: str
    reason: str
    error: Exception | None = None


@runtime_checkable
class _Named(Protocol):
    """A backend that knows its queue's SQS name without I/O (SqsBackend, MemoryBackend)."""

    @property
    def name(self) -> str: ...


class SourceQueues:
    """The queues a Lambda function's records come from, each described once. Thread-safe.

    Args:
        app: the app whose queues (and, on SQS, any queue a record names) records are run from.
    """

    def __init__(self, app: CloudJobs) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._by_arn: dict[str, SourceQueue] = {}
        self._built: list[SqsBackend] = []

    def resolve(self, event_source_arn: str) -> SourceQueue | UndescribedQueue:
        """The queue a record's ``eventSourceARN`` names, or why its records cannot run.

        Never raises: whatever describing the queue raised becomes the reason.
        """
        source = self._by_arn.get(event_source_arn)
        if source is not None and self._is_current(source):
            return source
        arn = QueueArn.parse(event_source_arn)
        if arn is None:
            return UndescribedQueue(
                event_source_arn or "(none)", "the event source is not an SQS queue's ARN"
            )
        with self._lock:
            source = self._by_arn.get(event_source_arn)
            if source is not None and self._is_current(source):
                return source
            try:
                resolved = self._describe(arn)
            except CloudjobsError as exc:
                return UndescribedQueue(arn.name, str(exc))
            except Exception as exc:  # the handler must never raise for one queue
                return UndescribedQueue(arn.name, f"{type(exc).__name__}: {exc}", exc)
            if isinstance(resolved, SourceQueue):
                self._by_arn[event_source_arn] = resolved
            return resolved

    def close(self) -> None:
        """Close the clients of the backends built here (the app's own stay open)."""
        with self._lock:
            built, self._built = self._built, []
            self._by_arn.clear()
        for backend in built:
            backend.close()

    def _is_current(self, source: SourceQueue) -> bool:
        """Whether the app's queue is still on the backend the source was built for (``jobs.testing()``
        swaps in fresh memory queues: a handler built once must follow them)."""
        if source.app_queue is None:
            return True
        try:
            return self._app.backend_of(source.app_queue) is source.backend
        except CloudjobsError:
            return False

    def _describe(self, arn: QueueArn) -> SourceQueue | UndescribedQueue:
        configured = self._configured_backends()
        for app_queue, backend in configured.items():
            if _sqs_name(backend) == arn.name:
                return SourceQueue(backend, self._app.consumer_on(backend), app_queue)
        if not _runs_on_sqs(list(configured.values())):
            known = ", ".join(repr(_sqs_name(backend)) for backend in configured.values()) or "none"
            return UndescribedQueue(
                arn.name, f"it is none of the app's queues ({known}), and the app does not run on SQS"
            )
        built = build_event_source_backend(self._app.settings, arn)
        try:
            consumer = self._app.consumer_on(built)
        except BaseException:
            built.close()
            raise
        self._built.append(built)
        return SourceQueue(built, consumer)

    def _configured_backends(self) -> dict[str, Backend]:
        """The app's queues: its name for each → its backend."""
        backends: dict[str, Backend] = {}
        for name in self._app.queue_names:
            try:
                backends[name] = self._app.backend_of(name)
            except ConfigurationError:
                continue  # no default queue configured: the app has only named ones
        return backends


def _sqs_name(backend: Backend) -> str:
    """The SQS name of a backend's queue; one GetQueueAttributes for a backend that does not know it."""
    if isinstance(backend, _Named) and isinstance(backend.name, str):
        return backend.name
    return backend.info().name


def _runs_on_sqs(backends: Sequence[Backend]) -> bool:
    """Whether a queue the app does not configure may be reached on SQS: every configured queue is
    an SqsBackend (none configured: SQS is what ``CloudJobs()`` builds)."""
    if any(is_memory_backend(backend) for backend in backends):
        return False  # tests: never reach for AWS (nor import boto3)
    if not backends:
        return True
    from cloudjobs.backends.sqs import SqsBackend

    return all(isinstance(backend, SqsBackend) for backend in backends)
