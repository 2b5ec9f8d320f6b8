"""The move-task redrive on SQS (which moto lacks): requests, polling and cancel, with a Stubber."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.stub import Stubber

from cloudjobs import BackendError
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.dlq import DeadLetterQueue, Progress, RedriveStop

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
DLQ_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq"
QUEUE_ARN = "arn:aws:sqs:eu-west-1:123456789012:orders"
DLQ_ARN = "arn:aws:sqs:eu-west-1:123456789012:orders-dlq"


@pytest.fixture
def client() -> Iterator[SQSClient]:
    sqs: SQSClient = boto3.session.Session().client(
        "sqs", region_name="eu-west-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    yield sqs
    sqs.close()


@pytest.fixture
def stubber(client: SQSClient) -> Iterator[Stubber]:
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def _dlq(client: SQSClient, sleeps: list[float]) -> DeadLetterQueue:
    backend = SqsBackend(queue_url=QUEUE_URL, dlq_url=DLQ_URL, client=client)
    return DeadLetterQueue(backend, poll_interval=5, sleep=sleeps.append)


def _expect_arns(stubber: Stubber) -> None:
    for url, arn in ((DLQ_URL, DLQ_ARN), (QUEUE_URL, QUEUE_ARN)):
        stubber.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": arn}},
            {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
        )


def _expect_listing(stubber: Stubber, result: dict[str, Any]) -> None:
    stubber.add_response(
        "get_queue_attributes",
        {"Attributes": {"QueueArn": DLQ_ARN}},
        {"QueueUrl": DLQ_URL, "AttributeNames": ["QueueArn"]},
    )
    stubber.add_response(
        "list_message_move_tasks",
        {"Results": [{"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN, **result}]},
        {"SourceArn": DLQ_ARN, "MaxResults": 10},
    )


def test_an_unfiltered_redrive_starts_a_move_task_to_the_source_queue_and_polls_until_completed(
    client: SQSClient, stubber: Stubber
) -> None:
    _expect_arns(stubber)
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": "task-1"},
        {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN},
    )
    _expect_listing(
        stubber,
        {
            "TaskHandle": "task-1",
            "Status": "RUNNING",
            "ApproximateNumberOfMessagesMoved": 40,
            "ApproximateNumberOfMessagesToMove": 100,
        },
    )
    _expect_listing(
        stubber,
        {
            "Status": "COMPLETED",
            "ApproximateNumberOfMessagesMoved": 100,
            "ApproximateNumberOfMessagesToMove": 100,
        },
    )
    sleeps: list[float] = []
    progress: list[Progress] = []

    report = _dlq(client, sleeps).redrive(on_progress=progress.append)

    assert (report.moved, report.skipped, report.failed, report.is_complete) == (100, 0, 0, True)
    assert sleeps == [5.0]
    assert progress == [Progress(done=40, total=100), Progress(done=100, total=100)]


def test_a_rate_is_passed_to_the_move_task_capped_at_five_hundred(
    client: SQSClient, stubber: Stubber
) -> None:
    _expect_arns(stubber)
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": "task-2"},
        {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN, "MaxNumberOfMessagesPerSecond": 500},
    )
    _expect_listing(stubber, {"Status": "COMPLETED", "ApproximateNumberOfMessagesMoved": 3})

    report = _dlq(client, []).redrive(rate=2000)

    assert report.moved == 3


def test_a_failed_move_task_is_reported_as_failed_with_its_reason(
    client: SQSClient, stubber: Stubber
) -> None:
    _expect_arns(stubber)
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": "task-3"},
        {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN},
    )
    _expect_listing(
        stubber,
        {
            "Status": "FAILED",
            "ApproximateNumberOfMessagesMoved": 7,
            "ApproximateNumberOfMessagesToMove": 10,
            "FailureReason": "AWS.SimpleQueueService.NonExistentQueue",
        },
    )

    report = _dlq(client, []).redrive()

    assert (report.moved, report.failed, report.is_complete) == (7, 3, False)
    assert report.errors == ("move task task-3 failed: AWS.SimpleQueueService.NonExistentQueue",)


def _expect_start(stubber: Stubber, handle: str) -> None:
    _expect_arns(stubber)
    stubber.add_response(
        "start_message_move_task",
        {"TaskHandle": handle},
        {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN},
    )


def _running(moved: int, handle: str) -> dict[str, Any]:
    return {
        "TaskHandle": handle,
        "Status": "RUNNING",
        "ApproximateNumberOfMessagesMoved": moved,
        "ApproximateNumberOfMessagesToMove": 100,
    }


def _ended(status: str, moved: int) -> dict[str, Any]:
    # SQS lists no TaskHandle once a task has ended.
    return {
        "Status": status,
        "ApproximateNumberOfMessagesMoved": moved,
        "ApproximateNumberOfMessagesToMove": 100,
    }


def _expect_cancel_refused(stubber: Stubber, handle: str, code: str, *, then: dict[str, Any]) -> None:
    """A task that has moved the start's count, a refused cancel, and the task as listed after it."""
    _expect_start(stubber, handle)
    _expect_listing(stubber, _running(100, handle))
    stubber.add_client_error(
        "cancel_message_move_task",
        service_error_code=code,
        service_message="refused",
        http_status_code=400,
        expected_params={"TaskHandle": handle},
    )
    _expect_listing(stubber, then)


def test_a_move_task_is_cancelled_once_it_has_moved_the_count_read_at_its_start(
    client: SQSClient, stubber: Stubber
) -> None:
    # With a worker running and the handler still failing, moved jobs come back to the DLQ and a
    # task left alone would move them again and again: it is cancelled at the start's count.
    _expect_start(stubber, "task-4")
    _expect_listing(stubber, _running(40, "task-4"))
    _expect_listing(stubber, _running(100, "task-4"))
    stubber.add_response(
        "cancel_message_move_task", {"ApproximateNumberOfMessagesMoved": 100}, {"TaskHandle": "task-4"}
    )
    _expect_listing(stubber, {**_running(103, "task-4"), "Status": "CANCELLING"})
    _expect_listing(stubber, _ended("CANCELLED", 104))
    sleeps: list[float] = []

    report = _dlq(client, sleeps).redrive()

    assert (report.moved, report.failed, report.is_complete) == (104, 0, True)
    assert report.stop is RedriveStop.MOVED_START_COUNT
    assert report.errors == ()
    assert sleeps == [5.0, 5.0, 5.0]


def test_a_task_that_completes_before_the_cancel_reaches_it_is_reported_as_completed(
    client: SQSClient, stubber: Stubber
) -> None:
    # SQS refuses to cancel a task that is no longer running.
    _expect_cancel_refused(stubber, "task-5", "ResourceNotFoundException", then=_ended("COMPLETED", 100))

    report = _dlq(client, []).redrive()

    assert (report.moved, report.failed, report.is_complete) == (100, 0, True)
    assert report.stop is RedriveStop.DRAINED


def test_a_cancel_refused_while_the_task_still_runs_raises_a_backend_error(
    client: SQSClient, stubber: Stubber
) -> None:
    _expect_cancel_refused(stubber, "task-6", "AccessDenied", then=_running(120, "task-6"))

    with pytest.raises(BackendError) as raised:
        _dlq(client, []).redrive()

    assert raised.value.code == "AccessDenied"


def test_a_task_cancelled_by_someone_else_is_reported_with_what_it_left(
    client: SQSClient, stubber: Stubber
) -> None:
    _expect_start(stubber, "task-7")
    _expect_listing(stubber, _ended("CANCELLED", 30))

    report = _dlq(client, []).redrive()

    assert (report.moved, report.failed, report.is_complete) == (30, 70, False)
    assert report.stop is RedriveStop.MOVE_TASK_STOPPED
    assert report.errors == ("move task task-7 cancelled: no reason given",)


def test_a_move_task_that_cannot_start_raises_a_backend_error(client: SQSClient, stubber: Stubber) -> None:
    _expect_arns(stubber)
    stubber.add_client_error(
        "start_message_move_task",
        service_error_code="AccessDenied",
        service_message="not authorized to perform sqs:StartMessageMoveTask",
        http_status_code=400,
    )

    with pytest.raises(BackendError) as raised:
        _dlq(client, []).redrive()

    assert raised.value.code == "AccessDenied"


def test_a_server_without_move_tasks_makes_start_return_none(client: SQSClient, stubber: Stubber) -> None:
    _expect_arns(stubber)
    stubber.add_client_error("start_message_move_task", service_error_code="500", http_status_code=500)
    backend = SqsBackend(queue_url=QUEUE_URL, dlq_url=DLQ_URL, client=client)

    assert backend.start_dead_letter_move() is None


def _expect_empty_receive(stubber: Stubber) -> None:
    stubber.add_response(
        "receive_message",
        {"Messages": []},
        {
            "QueueUrl": DLQ_URL,
            "MaxNumberOfMessages": 10,
            "WaitTimeSeconds": 1,
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": [
                "ApproximateReceiveCount",
                "SentTimestamp",
                "MessageGroupId",
                "AWSTraceHeader",
            ],
            "VisibilityTimeout": 300,
        },
    )


def test_a_filtered_or_dry_run_redrive_never_starts_a_move_task(client: SQSClient, stubber: Stubber) -> None:
    # The filtered redrive reads the DLQ's depth first (where it stops depends on it), then the
    # queue's configuration (once); a dry run reads neither again. Each then receives from the DLQ.
    stubber.add_response(
        "get_queue_attributes",
        {
            "Attributes": {
                "ApproximateNumberOfMessages": "0",
                "ApproximateNumberOfMessagesNotVisible": "0",
                "ApproximateNumberOfMessagesDelayed": "0",
            }
        },
        {
            "QueueUrl": DLQ_URL,
            "AttributeNames": [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        },
    )
    stubber.add_response(
        "get_queue_attributes",
        {"Attributes": {"MaximumMessageSize": "262144", "VisibilityTimeout": "30"}},
        {"QueueUrl": QUEUE_URL, "AttributeNames": ["All"]},
    )
    _expect_empty_receive(stubber)
    _expect_empty_receive(stubber)
    dlq = _dlq(client, [])

    filtered = dlq.redrive(job_type="charge")
    dry = dlq.redrive(dry_run=True)

    assert (filtered.moved, filtered.skipped, dry.moved, dry.dry_run) == (0, 0, 0, True)
