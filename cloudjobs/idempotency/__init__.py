"""Effectively-once processing and job status: the store protocol, its memory implementation, status.

The DynamoDB store is imported from its module (``from cloudjobs.idempotency.dynamodb import
DynamoDbIdempotencyStore``), so choosing AWS stays an explicit import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudjobs.lazy import lazy_names

# Nothing loads with the package: a consumer with no store (a Lambda cold start) imports only
# cloudjobs.idempotency.record_middleware from it. The names load on first access; the in-memory
# store (with the flow, schedule and uniqueness stores it holds) only when it is asked for.
if TYPE_CHECKING:
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


_MODULES = {
    "JobState": "cloudjobs.idempotency.status",
    "JobStatus": "cloudjobs.idempotency.status",
    "MemoryIdempotencyStore": "cloudjobs.idempotency.memory",
}

__getattr__, __dir__ = lazy_names(__name__, _MODULES, __all__, default="cloudjobs.idempotency.base")
