"""Effectively-once processing and job status: the store protocol, its memory implementation, status.

The DynamoDB store is imported from its module (``from cloudjobs.idempotency.dynamodb import
DynamoDbIdempotencyStore``), so choosing AWS stays an explicit import.
"""

from __future__ import annotations

from cloudjobs.idempotency.base import (
    Acquired,
    AlreadyCancelled,
    AlreadyCompleted,
    Cancellation,
    CancelOutcome,
    CancelRequested,
    Claim,
    IdempotencyStore,
    InProgress,
    JobControlStore,
    PayloadMismatch,
    Record,
    Renewal,
    Status,
)
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.idempotency.status import JobState, JobStatus

__all__ = [
    "Acquired",
    "AlreadyCancelled",
    "AlreadyCompleted",
    "CancelOutcome",
    "CancelRequested",
    "Cancellation",
    "Claim",
    "IdempotencyStore",
    "InProgress",
    "JobControlStore",
    "JobState",
    "JobStatus",
    "MemoryIdempotencyStore",
    "PayloadMismatch",
    "Record",
    "Renewal",
    "Status",
]
