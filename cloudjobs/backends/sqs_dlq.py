"""Dead-letter queue administration on SQS: the DeadLetterAdmin and DeadLetterMover protocols.

:class:`SqsDeadLetterAdmin` is held by :class:`~cloudjobs.backends.sqs.SqsBackend`, which delegates
to it; it is kept in its own module because it is operator tooling, not the path a runtime takes.
Browsing, releasing and deleting are a backend's own calls on the DLQ's URL; purge and move tasks
are here.

API references:
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_PurgeQueue.html
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_StartMessageMoveTask.html
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ListMessageMoveTasks.html
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CancelMessageMoveTask.html
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from cloudjobs.backends.base import Delivery, MoveTask, MoveTaskStatus
from cloudjobs.backends.sqs_errors import wrap_aws_errors
from cloudjobs.errors import BackendError

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import StartMessageMoveTaskRequestTypeDef

    from cloudjobs.backends.sqs import SqsBackend

# A short poll asks only some of SQS's servers and may answer empty while messages wait; a long
# poll of one second asks them all, so an empty answer means an empty DLQ.
_BROWSE_WAIT: Final = timedelta(seconds=1)
_MOVE_TASKS_LISTED: Final = 10
"""ListMessageMoveTasks' largest MaxResults."""
# "500" is a bare HTTP status with no AWS error document (what moto answers for an action it lacks);
# AWS's own internal errors carry a code (InternalError) and are retried by botocore.
_MOVE_TASKS_UNSUPPORTED: Final = frozenset({"UnsupportedOperation", "InvalidAction", "NotImplemented", "500"})


class SqsDeadLetterAdmin:
    """DLQ browsing, purge and server-side redrive for one queue, over a backend on its DLQ.

    :class:`~cloudjobs.backends.sqs.SqsBackend` builds one per call (its client and URLs may change
    after a fork or a lookup) and delegates its DeadLetterAdmin and DeadLetterMover methods to it.

    Args:
        dead_letter_queue: a backend on the dead-letter queue's URL: browsing, releasing and
            deleting are its own receive, change_visibility and delete; its client makes the rest.
        source_queue_url: the source queue's URL, asked for only when a move task starts (a queue
            known by name is looked up then).
        source_name: the source queue's name, recorded on errors.
    """

    def __init__(
        self, dead_letter_queue: SqsBackend, *, source_queue_url: Callable[[], str], source_name: str
    ) -> None:
        self._dead_letter_queue = dead_letter_queue
        self._source_queue_url = source_queue_url
        self._source_name = source_name

    def receive_dead_letters(self, *, max_messages: int, visibility: timedelta) -> list[Delivery]:
        """Receive up to ``max_messages`` (1–10) from the DLQ with a one-second long poll.

        Raises:
            QueueNotFoundError: the dead-letter queue does not exist.
            BackendError: the service refused the request.
        """
        return self._dead_letter_queue.receive(
            max_messages=max_messages, wait=_BROWSE_WAIT, visibility=visibility
        )

    def change_dead_letter_visibility(self, changes: Sequence[tuple[str, timedelta]]) -> list[str]:
        """Set up to ten DLQ messages' visibility with one batch call (0 releases them).

        Returns:
            The receipts of messages no longer in flight.

        Raises:
            BackendError: as :meth:`SqsBackend.change_visibility`.
        """
        return self._dead_letter_queue.change_visibility(changes)

    def delete_dead_letters(self, receipts: Sequence[str]) -> list[str]:
        """Delete up to ten DLQ messages with one DeleteMessageBatch; returns the receipts that failed.

        Raises:
            BackendError: as :meth:`SqsBackend.delete`.
        """
        return self._dead_letter_queue.delete(receipts)

    def purge_dead_letters(self) -> None:
        """PurgeQueue on the DLQ.

        AWS allows one purge per queue every 60 s (a second one fails with ``PurgeQueueInProgress``)
        and may take up to 60 s to delete everything.

        Raises:
            BackendError: the purge was refused (``code`` says why).
        """
        dlq_url = self._dead_letter_queue.queue_url()
        with wrap_aws_errors(dlq_url):
            self._dead_letter_queue.client.purge_queue(QueueUrl=dlq_url)

    def start_dead_letter_move(self, *, max_messages_per_second: int | None = None) -> str | None:
        """StartMessageMoveTask from the DLQ to the source queue, always with an explicit DestinationArn.

        A message the consumer dead-lettered itself was *sent* to the DLQ, so SQS knows no original
        source for it: without DestinationArn the task would fail on it.

        Returns:
            The task handle, or None when the server does not implement move tasks.

        Raises:
            BackendError: the task could not start (for example, one is already running).
        """
        request: StartMessageMoveTaskRequestTypeDef = {
            "SourceArn": self._queue_arn(self._dead_letter_queue.queue_url()),
            "DestinationArn": self._queue_arn(self._source_queue_url()),
        }
        if max_messages_per_second is not None:
            request["MaxNumberOfMessagesPerSecond"] = max_messages_per_second
        try:
            with wrap_aws_errors(self._source_name):
                return self._dead_letter_queue.client.start_message_move_task(**request)["TaskHandle"]
        except BackendError as exc:
            if exc.code in _MOVE_TASKS_UNSUPPORTED:
                return None
            raise

    def dead_letter_moves(self) -> list[MoveTask]:
        """ListMessageMoveTasks on the DLQ: up to ten tasks of the last 14 days, newest first.

        Raises:
            BackendError: the service refused the request.
        """
        source_arn = self._queue_arn(self._dead_letter_queue.queue_url())
        with wrap_aws_errors(self._source_name):
            results = self._dead_letter_queue.client.list_message_move_tasks(
                SourceArn=source_arn, MaxResults=_MOVE_TASKS_LISTED
            ).get("Results", [])
        return [
            MoveTask(
                status=MoveTaskStatus(result.get("Status", "RUNNING")),
                messages_moved=result.get("ApproximateNumberOfMessagesMoved", 0),
                messages_to_move=result.get("ApproximateNumberOfMessagesToMove"),
                handle=result.get("TaskHandle"),
                failure_reason=result.get("FailureReason"),
            )
            for result in results
        ]

    def cancel_dead_letter_move(self, handle: str) -> None:
        """CancelMessageMoveTask: the task stops (CANCELLING, then CANCELLED); moved messages stay moved.

        SQS cancels only a running task: one that has just ended is refused.

        Raises:
            BackendError: the cancel was refused (``code`` says why).
        """
        with wrap_aws_errors(self._source_name):
            self._dead_letter_queue.client.cancel_message_move_task(TaskHandle=handle)

    def _queue_arn(self, queue_url: str) -> str:
        with wrap_aws_errors(queue_url):
            attributes = self._dead_letter_queue.client.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["QueueArn"]
            )
        return attributes["Attributes"]["QueueArn"]
