"""Effectively-once processing and job status: the store protocol, its memory implementation, status.

The DynamoDB store is imported from its module (``from cloudjobs.idempotency.dynamodb import
DynamoDbIdempotencyStore``), so choosing AWS stays an explicit import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
from cloudjobs.idempotency.status import JobState, JobStatus

if TYPE_CHECKING:
    from cloudjobs.idempotency.memory import MemoryIdempotencyStore

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


def __getattr__(name: str) -> object:
    # The in-memory store (with the flow, schedule and uniqueness stores it holds) loads on first
    # use: a consumer on DynamoDB, or on no store at all (a Lambda cold start), never needs it.
    if name == "MemoryIdempotencyStore":
        from cloudjobs.idempotency.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
