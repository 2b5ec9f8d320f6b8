"""cloudjobs: background jobs on managed cloud queues.

Producers call :meth:`CloudJobs.enqueue`; an ECS worker (:meth:`CloudJobs.worker`) or a Lambda
function runs the registered handlers, with retries, a dead-letter queue and tracing. AWS pieces
are imported from their modules (``from cloudjobs.backends.sqs import SqsBackend``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudjobs.app import CloudJobs
from cloudjobs.backends.base import Backend, Delivery
from cloudjobs.clock import ManualClock
from cloudjobs.definition import JobHandle
from cloudjobs.envelope import Envelope
from cloudjobs.errors import (
    BackendError,
    BackendUnavailableError,
    BatchEnqueueError,
    CloudjobsError,
    ConfigurationError,
    CredentialsError,
    DecodeError,
    EnqueueError,
    FlowTooLargeError,
    IdempotencyError,
    IdempotencyKeyReusedError,
    IdempotencyStoreError,
    InvalidDelayError,
    InvalidFlowError,
    InvalidGroupIdError,
    InvalidLimitError,
    InvalidScheduleError,
    InvalidUniquenessError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobNotTrackedError,
    JobTimeoutError,
    LeaseLostError,
    MessageError,
    PayloadTooLargeError,
    PayloadValidationError,
    PermanentError,
    QueueNotFoundError,
    ResultError,
    ResultTimeoutError,
    RetryableError,
    UnknownJobError,
    UnknownQueueError,
)
from cloudjobs.job import Job, current_job
from cloudjobs.lazy import lazy_names
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Released, Retry
from cloudjobs.retry import RetryPolicy

if TYPE_CHECKING:
    from cloudjobs.backends.memory import MemoryBackend
    from cloudjobs.dlq.models import DeadJob, RedriveReport
    from cloudjobs.flows.definition import Flow
    from cloudjobs.idempotency.memory import MemoryIdempotencyStore
    from cloudjobs.idempotency.status import JobState, JobStatus
    from cloudjobs.settings_sources import Settings

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "BatchEnqueueError",
    "Cancelled",
    "CloudJobs",
    "CloudjobsError",
    "Completed",
    "ConfigurationError",
    "CredentialsError",
    "DeadJob",
    "DeadLetter",
    "DecodeError",
    "Deferred",
    "Delivery",
    "EnqueueError",
    "Envelope",
    "Flow",
    "FlowTooLargeError",
    "IdempotencyError",
    "IdempotencyKeyReusedError",
    "IdempotencyStoreError",
    "InvalidDelayError",
    "InvalidFlowError",
    "InvalidGroupIdError",
    "InvalidLimitError",
    "InvalidScheduleError",
    "InvalidUniquenessError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobHandle",
    "JobNotTrackedError",
    "JobState",
    "JobStatus",
    "JobTimeoutError",
    "LeaseLostError",
    "ManualClock",
    "MemoryBackend",
    "MemoryIdempotencyStore",
    "MessageError",
    "Outcome",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PermanentError",
    "QueueNotFoundError",
    "RedriveReport",
    "Released",
    "ResultError",
    "ResultTimeoutError",
    "Retry",
    "RetryPolicy",
    "RetryableError",
    "Settings",
    "UnknownJobError",
    "UnknownQueueError",
    "__version__",
    "current_job",
]

__version__ = "0.1.0"

# Dead-letter administration (cloudjobs.dlq) is operator work, the in-memory queue and store are for
# tests and local runs, flows and job statuses are a producer's, and Settings (pydantic-settings) is
# read only with a .env file: their names load on first access, so a worker or a Lambda cold start
# on SQS does not import them.
_LAZY = {
    "DeadJob": "cloudjobs.dlq.models",
    "Flow": "cloudjobs.flows.definition",
    "JobState": "cloudjobs.idempotency.status",
    "JobStatus": "cloudjobs.idempotency.status",
    "MemoryBackend": "cloudjobs.backends.memory",
    "MemoryIdempotencyStore": "cloudjobs.idempotency.memory",
    "RedriveReport": "cloudjobs.dlq.models",
    "Settings": "cloudjobs.settings_sources",
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
