"""What a failure becomes: a retry after its backoff, or a dead letter with its reason and traceback.

The one rule, used for a handler's failure and for anything else that fails around it: the job's
retry policy decides the attempts; the queue's ``maxReceiveCount`` is respected (the consumer
dead-letters at the last receive itself, with the reason, rather than let SQS's redrive move the
message without one); ``RetryableError(delay=...)`` chooses its own wait (capped at 12 hours).
"""

from __future__ import annotations

import traceback
from datetime import timedelta

from cloudjobs.backends.base import MAX_VISIBILITY, Delivery
from cloudjobs.errors import RetryableError
from cloudjobs.outcomes import DeadLetter, Outcome, Reason, Retry
from cloudjobs.retry import RetryPolicy


def failure_outcome(
    delivery: Delivery,
    error: BaseException,
    *,
    job_type: str | None,
    attempt: int,
    policy: RetryPolicy,
    max_receive_count: int | None,
    exhausted: str = Reason.MAX_ATTEMPTS,
    job_id: str | None = None,
) -> Outcome:
    """The outcome of failed attempt ``attempt``: a retry, or a dead letter once none may follow.

    Args:
        delivery: the message whose attempt failed.
        error: what failed it.
        job_type: the job's type, when known.
        attempt: the attempt that failed (1-based).
        policy: the job's retry policy.
        max_receive_count: the queue's redrive threshold (None without one).
        exhausted: the reason when the attempts run out (``max_attempts``; ``unknown_job`` for a
            type no handler is registered for).
        job_id: the job's id, when known.
    """
    if policy.is_exhausted(attempt):
        return dead_letter_of(error, exhausted, attempt, job_type, job_id=job_id)
    if max_receive_count is not None and delivery.receive_count >= max_receive_count:
        # The queue would redrive it on the next receive without saying why: send it ourselves.
        reason = exhausted if exhausted != Reason.MAX_ATTEMPTS else Reason.MAX_RECEIVES
        return dead_letter_of(error, reason, attempt, job_type, job_id=job_id)
    if isinstance(error, RetryableError) and error.delay is not None:
        delay = min(max(error.delay, timedelta(0)), MAX_VISIBILITY)
    else:
        delay = policy.backoff(attempt)
    return Retry(delay=delay, error=describe(error), attempt=attempt)


def dead_letter_of(
    error: BaseException,
    reason: str,
    attempt: int,
    job_type: str | None,
    *,
    job_id: str | None = None,
    is_message_error: bool = False,
) -> DeadLetter:
    """The dead letter of ``error``, with its traceback when it has one.

    ``is_message_error``: the error says what is wrong with the message itself (a failed decoding
    or validation): its text alone is recorded, without the exception's type.
    """
    text = str(error) if is_message_error else describe(error)
    trace = error.__traceback__
    formatted = "".join(traceback.format_exception(error)) if trace is not None else None
    return DeadLetter(
        reason=reason, error=text, attempt=attempt, job_type=job_type, job_id=job_id, traceback=formatted
    )


def next_step(outcome: Outcome) -> str:
    """What follows a failed attempt, for its log line."""
    match outcome:
        case Retry(delay=delay):
            return f"retrying in {delay.total_seconds():g}s"
        case DeadLetter(reason=reason):
            return f"dead-lettering it ({reason})"
    return "settled"


def describe(error: BaseException) -> str:
    """``"TypeName: message"`` (the type alone when the message is empty)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
