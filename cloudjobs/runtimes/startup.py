"""What a worker checks before anything runs: each check refuses a set-up that would break a promise.

- every job's timeout fits SQS's 12-hour visibility cap (or its message reappears while it runs);
- the queue has a dead-letter queue (or a job that fails for good is received forever);
- the stall timeout exceeds the long-poll wait (or every idle poll looks like a stall).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from cloudjobs.backends.base import MAX_VISIBILITY, Backend, QueueInfo, QueueStatistics
from cloudjobs.consumer import Consumer
from cloudjobs.definition import JobDefinition
from cloudjobs.errors import ConfigurationError


def check_timeouts(consumer: Consumer, definitions: Iterable[JobDefinition]) -> None:
    """Refuse a job whose timeout is beyond SQS's 12-hour visibility cap.

    Raises:
        ConfigurationError: a job's timeout (its own or the default) is longer than 12 hours.
    """
    for definition in definitions:
        if consumer.timeout_of(definition) > MAX_VISIBILITY:
            raise ConfigurationError(
                f"job {definition.name!r} has a timeout beyond SQS's 12-hour visibility cap; "
                "its message would reappear while it runs",
                setting="CLOUDJOBS_JOB_TIMEOUT_SECONDS",
            )


def check_dead_letter_queue(backend: Backend, info: QueueInfo, dlq_url: str | None) -> None:
    """Refuse a queue without a dead-letter queue: its failed-for-good jobs would never leave it.

    Args:
        backend: the queue.
        info: its configuration (a redrive policy names its DLQ).
        dlq_url: ``CLOUDJOBS_DLQ_URL``, when set.

    Raises:
        ConfigurationError: neither a redrive policy, ``CLOUDJOBS_DLQ_URL`` nor the backend names one.
    """
    if info.dead_letter_queue is not None or dlq_url:
        return
    # A backend built with its own DLQ URL (not from the settings) says so through its counts.
    if isinstance(backend, QueueStatistics) and backend.dead_letter_message_counts() is not None:
        return
    raise ConfigurationError(
        f"queue {info.name!r} has no dead-letter queue, so a job that fails for good (a PermanentError, "
        "an undecodable message) would be received again and again; give the queue a redrive policy "
        "(cloudjobs provision does) or set CLOUDJOBS_DLQ_URL to a dead-letter queue",
        setting="CLOUDJOBS_DLQ_URL",
    )


def check_stall_timeout(stall_timeout: timedelta, wait_time_seconds: int) -> None:
    """Refuse a stall timeout within the long-poll wait.

    Raises:
        ConfigurationError: ``stall_timeout`` is not longer than ``wait_time_seconds``.
    """
    if stall_timeout.total_seconds() <= wait_time_seconds:
        raise ConfigurationError(
            f"the stall timeout of {stall_timeout.total_seconds():g}s must exceed the long-poll "
            f"wait of {wait_time_seconds}s, or every idle poll would look like a stall",
            setting="CLOUDJOBS_STALL_TIMEOUT_SECONDS",
        )
