"""The exception tree of cloudjobs.

Every error raised by cloudjobs derives from :class:`CloudjobsError` and carries structured
fields besides its message, so callers can handle it without parsing text::

    CloudjobsError
    ├─ ConfigurationError        a setting is missing or contradicts another (names the setting)
    │  ├─ CredentialsError       no AWS credentials could be found
    │  ├─ PortInUseError         the port asked for a local server is taken
    │  ├─ UnknownQueueError      a queue name the app does not configure (``CLOUDJOBS_QUEUES``)
    │  ├─ InvalidScheduleError   a recurring schedule that cannot be declared as given (names it)
    │  └─ InvalidLimitError      a rate or concurrency limit that cannot be registered as given
    ├─ JobError                  raised by handlers to steer the outcome
    │  ├─ PermanentError         → dead-letter queue now, no retry
    │  └─ RetryableError         → retry, optionally after ``delay``
    │     └─ JobTimeoutError     the handler ran past its timeout
    ├─ MessageError              a message that cannot be run as it is (→ DLQ with ``reason``)
    │  ├─ DecodeError            the body is not a valid envelope
    │  ├─ UnknownJobError        no handler is registered for the job type
    │  ├─ PayloadValidationError the payload fails the job's schema
    │  └─ PayloadTooLargeError   the encoded message exceeds the queue's size limit
    ├─ EnqueueError              a producer-side request the queue cannot take
    │  ├─ InvalidDelayError      a delay outside 0–900 s, or any per-message delay on FIFO
    │  ├─ InvalidGroupIdError    a message group id SQS refuses, or a tenant and a group that differ
    │  ├─ BatchEnqueueError      some entries of a batch could not be sent (per entry)
    │  ├─ InvalidUniquenessError unique_key without unique_for, a window out of range, or a
    │  │                         unique job asked of a call that cannot make one
    │  └─ InvalidFlowError       a flow that cannot be made as asked (names the setting)
    │     └─ FlowTooLargeError   more children than one flow holds
    ├─ BackendError              the queue service failed or refused a request
    │  ├─ QueueNotFoundError     the queue (or its DLQ) does not exist
    │  └─ BackendUnavailableError the endpoint could not be reached
    ├─ IdempotencyError          effectively-once processing (cloudjobs.idempotency)
    │  ├─ IdempotencyStoreError  the store could not be reached or refused a request
    │  ├─ IdempotencyKeyReusedError a key came back with a different payload (→ DLQ)
    │  └─ LeaseLostError         a lease was taken over or released before its holder finished
    └─ ResultError               ``jobs.result(job_id)`` has no result to give (cloudjobs.results)
       ├─ JobFailedError         the job went to the dead-letter queue (its error)
       ├─ JobCancelledError      the job was cancelled
       ├─ ResultTimeoutError     the job did not finish in time (also a built-in TimeoutError)
       └─ JobNotTrackedError     the job keeps no record to read a result from

Botocore exceptions are wrapped at the edge (``raise QueueNotFoundError(queue=...) from exc``), so
user code never imports botocore to handle cloudjobs errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from cloudjobs.reasons import Reason


class CloudjobsError(Exception):
    """Root of every error cloudjobs raises."""


class ConfigurationError(CloudjobsError):
    """A setting is missing, malformed or contradicts another.

    Attributes:
        setting: the environment variable (``CLOUDJOBS_...``) or argument to change.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(f"{setting}: {message}" if setting else message)
        self.setting = setting


class CredentialsError(ConfigurationError):
    """No AWS credentials were found through boto3's credential chain."""


class PortInUseError(ConfigurationError):
    """The port asked for a local server (``cloudjobs local --port``) is already taken.

    Attributes:
        host: the address the server was to bind.
        port: the port that is taken.
    """

    def __init__(self, *, host: str, port: int) -> None:
        super().__init__(
            f"{host}:{port} is already in use: stop what listens there or choose another port", setting="port"
        )
        self.host = host
        self.port = port


class UnknownQueueError(ConfigurationError):
    """A queue name (a job's ``queue=``, an enqueue override, an operation's ``queue=``) that the
    app does not configure.

    Attributes:
        queue: the name asked for.
        known: the queue names the app configures.
    """

    def __init__(self, *, queue: str, known: Sequence[str] = ()) -> None:
        import difflib  # a suggestion is only made when an error is raised

        message = f"queue {queue!r} is not configured"
        close = difflib.get_close_matches(queue, known, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        message += f"; the app's queues: {', '.join(known) or 'none'}"
        super().__init__(message, setting="CLOUDJOBS_QUEUES")
        self.queue = queue
        self.known = tuple(known)


class InvalidScheduleError(ConfigurationError):
    """A recurring schedule (``jobs.schedule(...)``) that cannot be declared or run as given: a bad
    cron expression or time zone, both or neither of ``cron`` and ``every``, an out-of-range value,
    a name already taken, or ``overlap="skip"`` on a job type that keeps no status record.

    Attributes:
        schedule: the schedule's name.
        setting: the argument to change (``cron``, ``every``, ``tz``, ``overlap``...).
    """

    def __init__(self, message: str, *, schedule: str, setting: str | None = None) -> None:
        # The schedule leads the message: "schedule 'nightly': cron ..." reads better than the setting.
        super().__init__(f"schedule {schedule!r}: {message}")
        self.setting = setting
        self.schedule = schedule


class InvalidLimitError(ConfigurationError):
    """A rate or concurrency limit that cannot be registered as given (``@jobs.job(rate_limit=...,
    concurrency_limit=..., limit_key=...)``): a malformed rate (``"100/x"``, ``"0/m"``), a
    concurrency limit below 1, or a ``limit_key`` field the payload's model does not have.

    Attributes:
        job_name: the job type, when known.
        setting: the argument to change (``rate_limit``, ``concurrency_limit``, ``limit_key``).
    """

    def __init__(self, message: str, *, job_name: str | None = None, setting: str | None = None) -> None:
        # The job leads the message: "job 'export': concurrency_limit ..." names both.
        super().__init__(f"job {job_name!r}: {message}" if job_name else message)
        self.setting = setting
        self.job_name = job_name


class JobError(CloudjobsError):
    """Base of the errors a handler raises to choose what happens to its job."""


class PermanentError(JobError):
    """The job can never succeed: it goes to the dead-letter queue at once, with this message."""


class RetryableError(JobError):
    """The job failed for now; it is retried, after ``delay`` when given, else after the backoff.

    Args:
        delay: seconds or a timedelta before the next attempt (capped at SQS's 12-hour visibility limit).
    """

    def __init__(self, message: str = "", *, delay: timedelta | float | None = None) -> None:
        super().__init__(message)
        if delay is not None and not isinstance(delay, timedelta):
            delay = timedelta(seconds=delay)
        self.delay: timedelta | None = delay


class JobTimeoutError(RetryableError):
    """The handler ran past its timeout; the attempt counts as a retryable failure."""

    def __init__(self, *, job_name: str, timeout: timedelta) -> None:
        super().__init__(f"job {job_name!r} exceeded its timeout of {timeout.total_seconds():g}s")
        self.job_name = job_name
        self.timeout = timeout


class MessageError(CloudjobsError):
    """A message that cannot be run as it is; the consumer dead-letters it with ``reason``.

    Attributes:
        reason: a short machine-readable reason, recorded on the dead-lettered message.
    """

    reason: str = Reason.MESSAGE_ERROR

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(MessageError):
    """The message body is not a valid cloudjobs envelope and no routing rule applies."""

    reason = Reason.UNDECODABLE


class UnknownJobError(MessageError):
    """No handler is registered under the message's job type.

    Attributes:
        job_name: the job type.
        known: the job types that are registered (empty when not given); the message lists them
            and suggests the closest, so a misspelt type reads as one.
    """

    reason = Reason.UNKNOWN_JOB

    def __init__(self, *, job_name: str, known: Sequence[str] = ()) -> None:
        message = f"no handler registered for job type {job_name!r}"
        if known:
            import difflib  # a suggestion is only made when an error is raised

            close = difflib.get_close_matches(job_name, known, n=1)
            suggestion = f"did you mean {close[0]!r}? " if close else ""
            message += f" ({suggestion}registered: {', '.join(known)})"
        super().__init__(message)
        self.job_name = job_name
        self.known = tuple(known)


class PayloadValidationError(MessageError):
    """The payload does not match the job's payload model."""

    reason = Reason.INVALID_PAYLOAD

    def __init__(self, message: str, *, job_name: str) -> None:
        super().__init__(message)
        self.job_name = job_name


class PayloadTooLargeError(MessageError):
    """The encoded message (UTF-8 body plus attributes) is larger than the queue accepts."""

    reason = Reason.PAYLOAD_TOO_LARGE

    def __init__(self, *, job_name: str, size: int, limit: int) -> None:
        super().__init__(
            f"job {job_name!r}: message is {size} bytes, the queue accepts at most {limit} bytes"
        )
        self.job_name = job_name
        self.size = size
        self.limit = limit


class EnqueueError(CloudjobsError):
    """A producer-side request the queue cannot take as given."""


class InvalidDelayError(EnqueueError):
    """The requested delay is outside what the queue supports (0–900 s; none on FIFO queues)."""

    def __init__(self, message: str, *, delay: timedelta, queue: str) -> None:
        super().__init__(message)
        self.delay = delay
        self.queue = queue


class InvalidGroupIdError(EnqueueError):
    """A message group id SQS would refuse (1–128 characters of letters, digits and ASCII
    punctuation), or an explicit ``group_id`` and ``tenant`` that differ.

    Attributes:
        group_id: the value refused.
    """

    def __init__(self, message: str, *, group_id: str) -> None:
        super().__init__(message)
        self.group_id = group_id


class BatchEnqueueError(EnqueueError):
    """Some entries of a batch enqueue failed after retries; the others were sent.

    Attributes:
        sent: job ids that were sent, by position in the request (``None`` where that entry failed).
        failures: position in the request → the error reported for that entry.
    """

    def __init__(self, *, sent: Sequence[str | None], failures: Mapping[int, str]) -> None:
        super().__init__(
            f"{len(failures)} of {len(sent)} jobs could not be enqueued: "
            + "; ".join(f"#{index}: {error}" for index, error in sorted(failures.items()))
        )
        self.sent = list(sent)
        self.failures = dict(failures)


class InvalidUniquenessError(EnqueueError):
    """A unique job (``enqueue(..., unique_for=..., unique_key=...)``) that cannot be made as asked:
    a ``unique_key`` or ``unique_until`` without ``unique_for``, a window outside 1 s – 366 days,
    a key that is empty or too long, an unknown ``unique_until``, or a call that takes no unique
    jobs (``enqueue_many``).

    Attributes:
        job_name: the job type.
        setting: the argument to change (``unique_for``, ``unique_key``, ``unique_until``).
    """

    def __init__(self, message: str, *, job_name: str, setting: str) -> None:
        super().__init__(f"job {job_name!r}: {message}")
        self.job_name = job_name
        self.setting = setting


class InvalidFlowError(EnqueueError):
    """A flow (``jobs.flow(...)``) that cannot be made as asked: no children, an unknown
    ``on_child_failure``, a timeout out of range, or too many children (:class:`FlowTooLargeError`).

    Attributes:
        job_name: the parent's job type.
        setting: the argument to change (``children``, ``on_child_failure``, ``timeout``).
    """

    def __init__(self, message: str, *, job_name: str, setting: str) -> None:
        super().__init__(f"flow of {job_name!r}: {message}")
        self.job_name = job_name
        self.setting = setting


class FlowTooLargeError(InvalidFlowError):
    """A flow with more children than its record can hold (DynamoDB's 400 KB item limit).

    Attributes:
        children: how many children were asked for.
        limit: the most one flow holds.
    """

    def __init__(self, *, job_name: str, children: int, limit: int) -> None:
        super().__init__(
            f"{children} children, at most {limit} (the flow's record holds every child's id and "
            "DynamoDB items hold at most 400 KB); split it into nested flows",
            job_name=job_name,
            setting="children",
        )
        self.children = children
        self.limit = limit


class BackendError(CloudjobsError):
    """The queue service failed or refused a request.

    Attributes:
        queue: the queue name or URL concerned, when known.
        code: the service's error code, when there was one.
    """

    def __init__(self, message: str, *, queue: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.queue = queue
        self.code = code


class QueueNotFoundError(BackendError):
    """The queue (or its dead-letter queue) does not exist at the configured endpoint."""

    def __init__(self, *, queue: str) -> None:
        super().__init__(f"queue {queue!r} does not exist", queue=queue, code="QueueDoesNotExist")


class BackendUnavailableError(BackendError):
    """The queue endpoint could not be reached."""


class PayloadStoreError(BackendError):
    """The payload store (S3) failed or refused to store, read or delete a message's body.

    Attributes:
        bucket: the bucket concerned.
        key: the object's key, when known.
    """

    def __init__(self, message: str, *, bucket: str, key: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.bucket = bucket
        self.key = key


class PayloadMissingError(PayloadStoreError):
    """A message points to a stored body that is not there (deleted, expired, or another bucket)."""


class IdempotencyError(CloudjobsError):
    """Base of the idempotency store's errors.

    Attributes:
        key: the idempotency key concerned, when known.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class IdempotencyStoreError(IdempotencyError):
    """The idempotency store could not be reached or refused a request.

    The consumer fails closed on it: the handler does not run and the message comes back later.

    Attributes:
        table: the store's table, when it has one.
        code: the service's error code, when there was one.
    """

    def __init__(
        self, message: str, *, key: str | None = None, table: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, key=key)
        self.table = table
        self.code = code


class IdempotencyKeyReusedError(IdempotencyError):
    """An idempotency key came back with a different payload than the one it was first used with.

    The message goes to the dead-letter queue with the reason ``idempotency_key_reused``.

    Attributes:
        job_name: the job type.
        job_id: the job id of the record that holds the key.
    """

    reason = Reason.IDEMPOTENCY_KEY_REUSED

    def __init__(self, *, key: str, job_name: str, job_id: str | None) -> None:
        super().__init__(
            f"idempotency key {key!r} of job {job_name!r} was first used by job {job_id} with a "
            "different payload",
            key=key,
        )
        self.job_name = job_name
        self.job_id = job_id


class LeaseLostError(IdempotencyError):
    """A lease token no longer holds its record (it lapsed and was taken over, or was released)."""


class ResultError(CloudjobsError):
    """``jobs.result(job_id)`` has no result to give: the job failed, was cancelled, did not finish
    in time, or keeps no record.

    Attributes:
        job_id: the job asked about.
    """

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailedError(ResultError):
    """The job went to the dead-letter queue: it will not run again unless it is redriven.

    Attributes:
        job_type: the job's type.
        error: its last attempt's error (the dead-letter reason when the handler never ran).
        attempts: attempts started.
    """

    def __init__(self, *, job_id: str, job_type: str, error: str | None, attempts: int) -> None:
        super().__init__(
            f"job {job_id} ({job_type}) failed after {attempts} attempt(s): {error or 'no error recorded'}",
            job_id=job_id,
        )
        self.job_type = job_type
        self.error = error
        self.attempts = attempts


class JobCancelledError(ResultError):
    """The job was cancelled (``jobs.cancel``): it has no result and will not run (again).

    Attributes:
        job_type: the job's type (empty when only a cancellation marker knows the job).
    """

    def __init__(self, *, job_id: str, job_type: str) -> None:
        super().__init__(f"job {job_id} ({job_type or 'type unknown'}) was cancelled", job_id=job_id)
        self.job_type = job_type


class ResultTimeoutError(ResultError, TimeoutError):
    """The job did not finish within the time ``jobs.result`` waited; it may still finish later.

    Attributes:
        timeout: how long the call waited.
        state: the job's state when the wait ended (a :class:`~cloudjobs.idempotency.status.JobState`
            value such as ``"pending"`` or ``"running"``; None when no record was seen).
    """

    def __init__(self, *, job_id: str, timeout: timedelta, state: str | None) -> None:
        super().__init__(
            f"job {job_id} did not finish within {timeout.total_seconds():g}s "
            f"(last seen: {state or 'no record yet'})",
            job_id=job_id,
        )
        self.timeout = timeout
        self.state = state


class JobNotTrackedError(ResultError):
    """The job keeps no record, so it has no result to read: register its type with
    ``track_status=True`` or ``idempotent=True``, or enqueue it with ``track_status=True``.

    Raised at once for a job this process enqueued without a record; for another job id, when no
    record (nor cancellation marker) appears within the discovery grace (see
    :func:`cloudjobs.results.wait_for_result`), which also covers an id that was never enqueued or
    whose record was forgotten after its retention.
    """

    def __init__(self, *, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} has no result to wait for: {reason}", job_id=job_id)
        self.reason = reason
