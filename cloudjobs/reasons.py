"""Reasons: why an outcome other than success was decided, one enum shared by the core and runtimes."""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why an outcome other than ``Completed`` was decided: one member per reason, read by machines.

    Values are what the dead-letter attribute, logs and metrics carry; a ``StrEnum``, so a reason
    compares equal to its string. Message errors carry their own reason (``DecodeError.reason``...),
    which is one of these values.
    """

    # DeadLetter: the message can never succeed, or ran out of tries.
    PERMANENT_ERROR = "permanent_error"
    """The handler raised :class:`~cloudjobs.errors.PermanentError`."""
    MAX_ATTEMPTS = "max_attempts"
    """The job's retry policy allows no further attempt."""
    MAX_RECEIVES = "max_receives"
    """The queue would redrive the message on its next receive (maxReceiveCount reached)."""
    UNDECODABLE = "undecodable"
    """The body is not a cloudjobs envelope and no routing rule applies to it."""
    MALFORMED_ENVELOPE = "malformed_envelope"
    """The body is an envelope with missing or invalid fields."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """The envelope's version is newer than this consumer understands."""
    UNROUTABLE = "unroutable"
    """A foreign message that no routing rule gives a job type."""
    UNKNOWN_JOB = "unknown_job"
    """No handler is registered for the job type (retried first: a deploy may bring it)."""
    MESSAGE_ERROR = "message_error"
    """A :class:`~cloudjobs.errors.MessageError` raised without a more specific reason."""
    INVALID_PAYLOAD = "invalid_payload"
    """The payload fails the handler's schema."""
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    """The job's idempotency key cannot be derived from its payload, or is too long."""
    PAYLOAD_TOO_LARGE = "payload_too_large"
    """The payload is larger than the queue accepts."""
    PAYLOAD_MISSING = "payload_missing"
    """The message points to a stored body (S3) that is not there, or no payload store is configured."""
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    """The idempotency key is held by a job with another payload."""
    CHILD_FAILED = "child_failed"
    """A flow parent with ``on_child_failure="fail"``: a child went to the dead-letter queue, or the
    flow's timeout passed with children unfinished (see :mod:`cloudjobs.flows`)."""
    # Deferred: not run now, not an attempt.
    LEASE_HELD = "lease_held"
    """Another run holds the job's idempotency lease."""
    IDEMPOTENCY_STORE_UNAVAILABLE = "idempotency_store_unavailable"
    """The idempotency store could not be reached (fail closed)."""
    NOT_DUE = "not_due"
    """The job was enqueued with a delay past 15 minutes and is not due yet (see cloudjobs.hops)."""
    RATE_LIMITED = "rate_limited"
    """The job type's rate limit (for its key) has no start left now (see cloudjobs.limits)."""
    CONCURRENCY_LIMITED = "concurrency_limited"
    """The job type's concurrency limit (for its key) is reached (see cloudjobs.limits)."""
    LIMITER_UNAVAILABLE = "limiter_unavailable"
    """The limits' store could not be reached (fail closed: a limited job does not run)."""
    # Released: never started, visible again at once.
    SHUTDOWN = "shutdown"
    """The worker is stopping."""
    FIFO_GROUP_BLOCKED = "fifo_group_blocked"
    """An earlier message of the same FIFO group did not finish."""
    FIFO_BATCH_STOPPED = "fifo_batch_stopped"
    """An earlier record of the Lambda FIFO batch did not finish (``FifoRule.STOP_AT_FIRST_FAILURE``)."""
    TIME_BUDGET = "time_budget"
    """Too little of the Lambda invocation was left to start the record."""
