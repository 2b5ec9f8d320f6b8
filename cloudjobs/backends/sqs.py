"""SqsBackend: the Backend protocol on Amazon SQS, through boto3.

boto3 resolves credentials, region, endpoint (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_SQS``) and retry
mode as it always does; this module only sizes the connection pool and the read timeout for long polls.
Every botocore exception is translated into the :mod:`cloudjobs.errors` tree (by
:func:`wrap_aws_errors`, from :mod:`cloudjobs.backends.sqs_errors`), so callers never import botocore.
Messages and attributes are converted to and from boto3's shapes in :mod:`cloudjobs.backends.sqs_messages`.

Limits referred to below: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import boto3
from botocore.config import Config

from cloudjobs.aws_clients import create_client
from cloudjobs.backends.base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_BATCH_ENTRIES,
    Delivery,
    MoveTask,
    OutgoingMessage,
    QueueCounts,
    QueueInfo,
    SendResult,
)

# Re-exported (the "as" form): it was first defined here.
from cloudjobs.backends.base import MAX_WAIT_TIME_SECONDS as MAX_WAIT_TIME_SECONDS
from cloudjobs.backends.copies import dead_letter_attributes_within
from cloudjobs.backends.sqs_dlq import SqsDeadLetterAdmin

# Re-exported (the "as" form): provisioning and the CLI import it from here.
from cloudjobs.backends.sqs_errors import wrap_aws_errors as wrap_aws_errors
from cloudjobs.backends.sqs_messages import (
    batch_entry,
    delivery_of,
    queue_info_of,
    send_request,
    whole_seconds,
)
from cloudjobs.errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import MessageSystemAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        ReceiveMessageRequestTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

_READ_TIMEOUT_MARGIN_SECONDS: Final = 10
# MessageSystemAttributeNames replaces the deprecated AttributeNames (same values). Standard queues'
# messages carry a group too: a tenant (fair queues).
_SYSTEM_ATTRIBUTES: Final[list[MessageSystemAttributeNameType]] = [
    "ApproximateReceiveCount",
    "SentTimestamp",
    "MessageGroupId",
    "AWSTraceHeader",
]
# Codes meaning "this receipt no longer names an in-flight message": deleted, expired, or released.
# AWS answers an expired handle with InvalidParameterValue.
_GONE_CODES: Final = frozenset(
    {"ReceiptHandleIsInvalid", "InvalidParameterValue", "AWS.SimpleQueueService.MessageNotInflight"}
)


class SqsBackend:
    """A queue on Amazon SQS (or any server speaking its API), implementing the Backend protocol.

    It also implements DeadLetterAdmin and DeadLetterMover for ``jobs.dlq``, by delegating to a
    :class:`~cloudjobs.backends.sqs_dlq.SqsDeadLetterAdmin` over a backend on its DLQ.

    The client is created on first use and again after a fork (a child process must not share the
    parent's connections). Give ``queue_url``, or ``queue_name`` to look the URL up with GetQueueUrl.

    Args:
        queue_url: the queue's URL; only its last path component (the name) is read from it, the
            endpoint comes from boto3's configuration.
        queue_name: the queue's name, when no URL is given.
        dlq_url: the dead-letter queue's URL; by default it is found from the redrive policy.
        region: the AWS region; by default boto3 resolves it (``AWS_REGION``, profile, ...).
        session: the boto3 session to create clients from; a new default session otherwise.
        client: a ready SQS client; then ``session``, ``region`` and the pool settings are unused,
            the client is used as is in every process, and :meth:`close` leaves it open.
        max_pool_connections: HTTP connections kept per client (one per concurrent call).
        wait_time_seconds: the longest long poll :meth:`receive` makes (0–20 s); the read timeout is
            set 10 s above it.
        config: extra botocore configuration, merged under the pool size and read timeout.

    Raises:
        ConfigurationError: neither ``queue_url`` nor ``queue_name`` is given, or
            ``wait_time_seconds`` is outside 0–20.
    """

    def __init__(
        self,
        *,
        queue_url: str | None = None,
        queue_name: str | None = None,
        dlq_url: str | None = None,
        region: str | None = None,
        session: boto3.session.Session | None = None,
        client: SQSClient | None = None,
        max_pool_connections: int = 10,
        wait_time_seconds: int = MAX_WAIT_TIME_SECONDS,
        config: Config | None = None,
    ) -> None:
        if queue_url is None and queue_name is None:
            raise ConfigurationError("give the queue's URL or its name", setting="queue_url")
        if not 0 <= wait_time_seconds <= MAX_WAIT_TIME_SECONDS:
            raise ConfigurationError(
                f"must be 0 to {MAX_WAIT_TIME_SECONDS} seconds", setting="wait_time_seconds"
            )
        self._queue_url = queue_url
        self._name = queue_name or _name_from_url(queue_url or "")
        self._dlq_url = dlq_url
        self._dlq_max_size: int | None = None
        self._region = region
        self._session = session
        self._given_client = client
        self._wait_time_seconds = wait_time_seconds
        own = Config(
            max_pool_connections=max_pool_connections,
            read_timeout=wait_time_seconds + _READ_TIMEOUT_MARGIN_SECONDS,
            # Every request is built here from typed values; botocore's client-side check walked each
            # entry and attribute of a batch (~120 µs per SendMessageBatch of ten with cloudjobs'
            # attributes, ~30 µs per DeleteMessageBatch) that SQS checks anyway.
            parameter_validation=False,
        )
        self._config = config.merge(own) if config is not None else own
        self._lock = threading.Lock()
        self._client: SQSClient | None = None
        self._client_pid: int | None = None
        self._info: QueueInfo | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def client(self) -> SQSClient:
        """The SQS client for this process: created on first use, created anew after a fork.

        Raises:
            CredentialsError, ConfigurationError: boto3 could not build a client.
        """
        if self._given_client is not None:
            return self._given_client
        pid = os.getpid()
        with self._lock:
            if self._client is None or self._client_pid != pid:
                # After a fork the old client's sockets belong to the parent too: drop it unclosed.
                with wrap_aws_errors(self._name):
                    self._client = self._create_client()
                self._client_pid = pid
            return self._client

    def prepare(self) -> None:
        """Build this process's client now (botocore loads the service's model: tens of
        milliseconds of CPU), sending no request."""
        _ = self.client

    def close(self) -> None:
        """Close the client this backend created in this process (a given client stays open)."""
        with self._lock:
            client, self._client = self._client, None
            owned = self._client_pid == os.getpid()
        if client is not None and owned:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- Backend protocol -------------------------------------------------------------------------

    def info(self) -> QueueInfo:
        """The queue's configuration, read with one GetQueueAttributes and then cached.

        Raises:
            QueueNotFoundError: the queue does not exist.
            BackendError: the service refused the request.
        """
        if self._info is not None:
            return self._info
        queue_url = self.queue_url()
        with wrap_aws_errors(self._name):
            attributes = self.client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"]).get(
                "Attributes", {}
            )
        self._info = queue_info_of(self._name, queue_url, attributes)
        return self._info

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send up to ten messages with one SendMessageBatch; one result per message, in order.

        Each entry succeeds or fails on its own. A per-message delay on a FIFO queue fails its entry
        without being sent (SQS refuses it); a delay is rounded up to whole seconds.

        Raises:
            BackendError: the batch is empty or holds more than ten entries, or the whole request was
                refused (for example, ``BatchRequestTooLong``).
        """
        if not 1 <= len(messages) <= MAX_BATCH_ENTRIES:
            raise BackendError(f"a batch holds 1 to {MAX_BATCH_ENTRIES} entries", queue=self._name)
        is_fifo = self.info().is_fifo
        results: list[SendResult | None] = [None] * len(messages)
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for index, message in enumerate(messages):
            if is_fifo and message.delay:
                results[index] = SendResult(
                    error="InvalidParameterValue: FIFO queues take no per-message delay"
                )
                continue
            entries.append(batch_entry(str(index), message))
        if entries:
            with wrap_aws_errors(self._name):
                response = self.client.send_message_batch(QueueUrl=self.queue_url(), Entries=entries)
            for success in response.get("Successful", []):
                results[int(success["Id"])] = SendResult(message_id=success["MessageId"])
            for failure in response.get("Failed", []):
                results[int(failure["Id"])] = SendResult(
                    error=f"{failure['Code']}: {failure.get('Message', '')}",
                    retryable=not failure["SenderFault"],
                )
        return [
            result or SendResult(error="InternalError: no result for this entry", retryable=True)
            for result in results
        ]

    def receive(
        self, *, max_messages: int, wait: timedelta, visibility: timedelta | None = None
    ) -> list[Delivery]:
        """Receive up to ``max_messages`` (1–10), long-polling up to ``wait`` for the first.

        ``wait`` is capped at ``wait_time_seconds``; ``visibility`` (whole seconds, rounded up,
        at most 12 hours) overrides the queue's visibility timeout for these messages. Fewer
        messages than are available may come back: drain by receiving until empty.

        Raises:
            BackendError: ``max_messages`` is outside 1–10, or the service refused the request.
        """
        if not 1 <= max_messages <= MAX_BATCH_ENTRIES:
            raise BackendError(f"max_messages must be 1 to {MAX_BATCH_ENTRIES}", queue=self._name)
        wait_seconds = min(max(int(wait.total_seconds()), 0), self._wait_time_seconds)
        request: ReceiveMessageRequestTypeDef = {
            "QueueUrl": self.queue_url(),
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": _SYSTEM_ATTRIBUTES,
        }
        if visibility is not None:
            request["VisibilityTimeout"] = whole_seconds(visibility)
        with wrap_aws_errors(self._name):
            response = self.client.receive_message(**request)
        return [delivery_of(message, self._name) for message in response.get("Messages", [])]

    def delete(self, receipts: Sequence[str]) -> list[str]:
        """Delete up to ten messages with one DeleteMessageBatch.

        Returns:
            The receipts whose deletion failed; receipts of messages already gone (deleted, expired)
            count as deleted.

        Raises:
            BackendError: more than ten receipts, or the service refused the whole request.
        """
        if not receipts:
            return []
        if len(receipts) > MAX_BATCH_ENTRIES:
            raise BackendError(f"a batch holds at most {MAX_BATCH_ENTRIES} entries", queue=self._name)
        with wrap_aws_errors(self._name):
            response = self.client.delete_message_batch(
                QueueUrl=self.queue_url(),
                Entries=[
                    {"Id": str(index), "ReceiptHandle": receipt} for index, receipt in enumerate(receipts)
                ],
            )
        return [
            receipts[int(failure["Id"])]
            for failure in response.get("Failed", [])
            if failure["Code"] not in _GONE_CODES
        ]

    def change_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Set up to ten messages' visibility timeouts, counted from now, with one batch call.

        Timeouts are rounded up to whole seconds and clamped to 0–43,200 s; SQS also caps a
        message's total visibility at 12 hours from its receive.

        Returns:
            The receipts of messages no longer in flight (deleted, expired or released).

        Raises:
            BackendError: more than ten changes, the whole request was refused, or an entry failed
                for another reason than its message being gone (``code`` names the first one).
        """
        if not changes:
            return []
        if len(changes) > MAX_BATCH_ENTRIES:
            raise BackendError(f"a batch holds at most {MAX_BATCH_ENTRIES} entries", queue=self._name)
        with wrap_aws_errors(self._name):
            response = self.client.change_message_visibility_batch(
                QueueUrl=self.queue_url(),
                Entries=[
                    {"Id": str(index), "ReceiptHandle": receipt, "VisibilityTimeout": whole_seconds(timeout)}
                    for index, (receipt, timeout) in enumerate(changes)
                ],
            )
        gone: list[str] = []
        for failure in response.get("Failed", []):
            if failure["Code"] not in _GONE_CODES:
                raise BackendError(
                    f"visibility change refused: {failure['Code']}: {failure.get('Message', '')}",
                    queue=self._name,
                    code=failure["Code"],
                )
            gone.append(changes[int(failure["Id"])][0])
        return gone

    def dead_letter(self, delivery: Delivery, attributes: Mapping[str, str]) -> None:
        """Send a copy of ``delivery`` to the dead-letter queue with extra ``attributes``.

        The copy keeps the body, the delivery's attributes and its ``AWSTraceHeader``; ``attributes``
        win on a name clash. SQS takes at most ten attributes: past that, the delivery's lowest-ranked
        attributes are dropped with a warning (a sender's own, ``tracestate`` and ``baggage`` before
        ``traceparent`` and the job's; see :func:`~cloudjobs.telemetry.propagation.fit_attributes`).
        On FIFO the copy keeps its group and is deduplicated on the original message id. The caller
        deletes the original.

        Raises:
            ConfigurationError: the queue has no dead-letter queue.
            QueueNotFoundError: the dead-letter queue does not exist.
            BackendError: the dead-letter queue refused the message.
        """
        dlq_url = self.dead_letter_queue_url()
        is_fifo = self.info().is_fifo
        strings, typed = dead_letter_attributes_within(
            delivery, attributes, max_size=self._dead_letter_max_size(dlq_url)
        )
        outgoing = OutgoingMessage(
            body=delivery.body,
            attributes=strings,
            group_id=(delivery.group_id or delivery.message_id) if is_fifo else delivery.group_id,
            deduplication_id=delivery.message_id if is_fifo else None,
            system_attributes=delivery.system_attributes,
            typed_attributes=typed,
        )
        with wrap_aws_errors(_name_from_url(dlq_url)):
            self.client.send_message(**send_request(dlq_url, outgoing))

    # -- QueueStatistics protocol ------------------------------------------------------------------

    def message_counts(self) -> QueueCounts:
        """The queue's approximate counts, with one GetQueueAttributes.

        Raises:
            QueueNotFoundError: the queue does not exist.
            BackendError: the service refused the request.
        """
        return self._counts(self.queue_url(), self._name)

    def dead_letter_message_counts(self) -> QueueCounts | None:
        """The dead-letter queue's approximate counts, or None when the queue has no redrive policy.

        Raises:
            QueueNotFoundError: the dead-letter queue does not exist.
            BackendError: the service refused the request.
        """
        if self._dlq_url is None and self.info().dead_letter_queue is None:
            return None
        dlq_url = self.dead_letter_queue_url()
        return self._counts(dlq_url, _name_from_url(dlq_url))

    def _counts(self, queue_url: str, name: str) -> QueueCounts:
        with wrap_aws_errors(name):
            attributes = self.client.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            ).get("Attributes", {})
        return QueueCounts(
            visible=int(attributes.get("ApproximateNumberOfMessages", "0")),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", "0")),
        )

    # -- DeadLetterAdmin and DeadLetterMover protocols --------------------------------------------
    # Each may also raise ConfigurationError (the queue has no dead-letter queue) and
    # QueueNotFoundError (it does not exist), as dead_letter_queue_url does.

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        """See :meth:`SqsDeadLetterAdmin.receive_dead_letters`."""
        return self._dead_letters().receive_dead_letters(max_messages=max_messages, visibility=visibility)

    def change_dead_letter_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """See :meth:`SqsDeadLetterAdmin.change_dead_letter_visibility`."""
        return self._dead_letters().change_dead_letter_visibility(changes)

    def delete_dead_letters(self, receipts: Sequence[str]) -> list[str]:
        """See :meth:`SqsDeadLetterAdmin.delete_dead_letters`."""
        return self._dead_letters().delete_dead_letters(receipts)

    def purge_dead_letters(self) -> None:
        """See :meth:`SqsDeadLetterAdmin.purge_dead_letters`."""
        self._dead_letters().purge_dead_letters()

    def start_dead_letter_move(self, *, max_messages_per_second: int | None = None) -> str | None:
        """See :meth:`SqsDeadLetterAdmin.start_dead_letter_move`."""
        return self._dead_letters().start_dead_letter_move(max_messages_per_second=max_messages_per_second)

    def dead_letter_moves(self) -> list[MoveTask]:
        """See :meth:`SqsDeadLetterAdmin.dead_letter_moves`."""
        return self._dead_letters().dead_letter_moves()

    def cancel_dead_letter_move(self, handle: str) -> None:
        """See :meth:`SqsDeadLetterAdmin.cancel_dead_letter_move`."""
        self._dead_letters().cancel_dead_letter_move(handle)

    # -- URLs -------------------------------------------------------------------------------------

    def queue_url(self) -> str:
        """The queue's URL, looked up by name with GetQueueUrl once when not given.

        Raises:
            QueueNotFoundError: no queue has that name.
        """
        if self._queue_url is None:
            with wrap_aws_errors(self._name):
                self._queue_url = self.client.get_queue_url(QueueName=self._name)["QueueUrl"]
        return self._queue_url

    def dead_letter_queue_url(self) -> str:
        """The dead-letter queue's URL: as given, else looked up by the name in the redrive policy.

        Only the name is taken from the policy's ARN; the URL comes from GetQueueUrl at the
        configured endpoint.

        Raises:
            ConfigurationError: no URL was given and the queue has no redrive policy.
            QueueNotFoundError: the dead-letter queue does not exist.
        """
        if self._dlq_url is None:
            dlq_name = self.info().dead_letter_queue
            if dlq_name is None:
                raise ConfigurationError(f"queue {self._name!r} has no dead-letter queue", setting="dlq_url")
            with wrap_aws_errors(dlq_name):
                self._dlq_url = self.client.get_queue_url(QueueName=dlq_name)["QueueUrl"]
        return self._dlq_url

    # -- internals --------------------------------------------------------------------------------

    def _dead_letter_max_size(self, dlq_url: str) -> int:
        """The DLQ's MaximumMessageSize, read once (it may be smaller than the source queue's)."""
        if self._dlq_max_size is None:
            with wrap_aws_errors(_name_from_url(dlq_url)):
                answer = self.client.get_queue_attributes(
                    QueueUrl=dlq_url, AttributeNames=["MaximumMessageSize"]
                ).get("Attributes", {})
            self._dlq_max_size = int(answer.get("MaximumMessageSize", DEFAULT_MAX_MESSAGE_SIZE))
        return self._dlq_max_size

    def _dead_letters(self) -> SqsDeadLetterAdmin:
        # Built per call: the client is per process and the DLQ's URL is looked up on first use.
        dead_letter_queue = SqsBackend(queue_url=self.dead_letter_queue_url(), client=self.client)
        return SqsDeadLetterAdmin(dead_letter_queue, source_queue_url=self.queue_url, source_name=self._name)

    def _create_client(self) -> SQSClient:
        client: SQSClient = create_client(
            "sqs", session=self._session, region=self._region, config=self._config
        )
        return client


def _name_from_url(queue_url: str) -> str:
    # Only the last path component is trusted: local servers return hosts that may not resolve.
    name = queue_url.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ConfigurationError(f"no queue name in URL {queue_url!r}", setting="queue_url")
    return name
