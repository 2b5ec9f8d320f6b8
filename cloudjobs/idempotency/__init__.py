"""Effectively-once processing and job status: the store protocol, its memory implementation, status.

The DynamoDB store is imported from its module (``from cloudjobs.idempotency.dynamodb import
DynamoDbIdempotencyStore``), so choosing AWS stays an explicit import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_MODULES.get(name, "cloudjobs.idempotency.base")), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
