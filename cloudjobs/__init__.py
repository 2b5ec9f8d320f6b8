"""cloudjobs: background jobs on managed cloud queues.

Producers call :meth:`CloudJobs.enqueue`; an ECS worker (:meth:`CloudJobs.worker`) or a Lambda
function runs the registered handlers, with retries, a dead-letter queue and tracing. AWS pieces
are imported from their modules (``from cloudjobs.backends.sqs import SqsBackend``).
"""

from __future__ import annotations

from cloudjobs.app import CloudJobs
from cloudjobs.backends.base import Backend, Delivery
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.clock import ManualClock
from cloudjobs.definition import JobHandle
from cloudjobs.dlq.models import DeadJob, RedriveReport
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
    IdempotencyError,
    IdempotencyKeyReusedError,
    IdempotencyStoreError,
    InvalidDelayError,
    InvalidGroupIdError,
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
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.idempotency.status import JobState, JobStatus
from cloudjobs.job import Job, current_job
from cloudjobs.outcomes import Cancelled, Completed, DeadLetter, Deferred, Outcome, Released, Retry
from cloudjobs.retry import RetryPolicy
from cloudjobs.settings import Settings

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
    "IdempotencyError",
    "IdempotencyKeyReusedError",
    "IdempotencyStoreError",
    "InvalidDelayError",
    "InvalidGroupIdError",
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
