"""One-time schedules of delayed jobs: names, the producer's hand-off, and what the service's errors
become (botocore's Stubber stands in for the service's error answers, which moto does not give)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber

from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.clock import ManualClock
from cloudjobs.errors import BackendError, BatchEnqueueError, ConfigurationError
from cloudjobs.producer import EnqueueRequest, Producer
from cloudjobs.scheduling.eventbridge import (
    DELAY_PREFIX,
    EventBridgeSchedules,
    delay_schedule_name,
    send_message_input,
)
from cloudjobs.telemetry.spans import Telemetry

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_delayed_jobs_schedule_is_named_after_it_within_eventbridges_rules() -> None:
    job_id = "0b7d6f0e-4a39-4d1c-9a4e-3f1d2c5b6a7e"
    assert delay_schedule_name(job_id) == DELAY_PREFIX + job_id
    for odd in ("schedule:nightly@2026-12-03T02:00:00Z", "x" * 100):
        name = delay_schedule_name(odd)
        assert re.fullmatch(r"[0-9A-Za-z_.-]{1,64}", name)
        assert name.startswith(DELAY_PREFIX)
        assert name == delay_schedule_name(odd)  # cancel finds it again
    assert delay_schedule_name("a:b") != delay_schedule_name("a;b")


def test_the_target_input_is_the_sendmessage_request_as_json() -> None:
    message = OutgoingMessage(
        body='{"cloudjobs":1}',
        attributes={"cloudjobs.type": "remind"},
        group_id="user-1",
        deduplication_id="job-1",
    )
    assert json.loads(send_message_input("https://sqs/q.fifo", message)) == {
        "QueueUrl": "https://sqs/q.fifo",
        "MessageBody": '{"cloudjobs":1}',
        "MessageAttributes": {"cloudjobs.type": {"DataType": "String", "StringValue": "remind"}},
        "MessageGroupId": "user-1",
        "MessageDeduplicationId": "job-1",
    }


class _Later:
    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[tuple[str, datetime, OutgoingMessage]] = []
        self.fail = fail

    def send_at(self, job_id: str, at: datetime, message: OutgoingMessage) -> None:
        if self.fail:
            raise BackendError("EventBridge Scheduler: throttled")
        self.sent.append((job_id, at, message))


def _producer(later: _Later, backend: MemoryBackend) -> Producer:
    return Producer(backend, ManualClock(NOW), telemetry=Telemetry(is_enabled=False), later=later)


def test_the_producer_hands_jobs_due_past_the_hop_to_the_later_sender_and_sends_the_rest() -> None:
    backend = MemoryBackend(clock=ManualClock(NOW))
    later = _Later()
    ids = _producer(later, backend).enqueue(
        [
            EnqueueRequest("remind", {"n": 1}, delay=timedelta(days=2)),
            EnqueueRequest("remind", {"n": 2}, delay=timedelta(minutes=10)),
            EnqueueRequest("remind", {"n": 3}, run_at=NOW + timedelta(hours=5)),
        ]
    )
    assert [job_id for job_id, _, _ in later.sent] == [ids[0], ids[2]]
    assert [at for _, at, _ in later.sent] == [NOW + timedelta(days=2), NOW + timedelta(hours=5)]
    assert all(message.delay == timedelta(0) for _, _, message in later.sent)
    assert all('"due_at"' not in message.body for _, _, message in later.sent)
    assert backend.counts()[2] == 1  # only the 10-minute job is in the queue


def test_a_failed_hand_off_fails_a_single_enqueue_and_is_reported_in_a_batch() -> None:
    backend = MemoryBackend(clock=ManualClock(NOW))
    with pytest.raises(BackendError, match="throttled"):
        _producer(_Later(fail=True), backend).enqueue([EnqueueRequest("remind", {}, delay=timedelta(days=1))])
    with pytest.raises(BatchEnqueueError) as caught:
        _producer(_Later(fail=True), backend).enqueue(
            [EnqueueRequest("remind", {}), EnqueueRequest("remind", {}, delay=timedelta(days=1))]
        )
    assert caught.value.sent[0] is not None
    assert set(caught.value.failures) == {1}
    assert backend.counts()[0] == 1


@pytest.fixture
def stubbed() -> Iterator[tuple[EventBridgeSchedules, Stubber]]:
    client = boto3.session.Session().client(
        "scheduler", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield EventBridgeSchedules(group="orders", role_arn="arn:aws:iam::1:role/r", client=client), stubber
    client.close()


def _message() -> OutgoingMessage:
    return OutgoingMessage(body="{}", attributes={})


def test_a_missing_group_is_a_configuration_error_naming_the_setting(
    stubbed: tuple[EventBridgeSchedules, Stubber],
) -> None:
    schedules, stubber = stubbed
    stubber.add_client_error("create_schedule", service_error_code="ResourceNotFoundException")
    with pytest.raises(ConfigurationError, match="schedule group 'orders' does not exist"):
        schedules.create_at("n", NOW, "https://q", _message(), job="job 1")


def test_a_schedule_that_exists_already_stands_and_a_missing_one_deletes_as_false(
    stubbed: tuple[EventBridgeSchedules, Stubber],
) -> None:
    schedules, stubber = stubbed
    stubber.add_client_error("create_schedule", service_error_code="ConflictException")
    schedules.create_at("n", NOW + timedelta(microseconds=1), "https://q", _message(), job="job 1")
    stubber.add_client_error("delete_schedule", service_error_code="ResourceNotFoundException")
    assert schedules.delete("n") is False


def test_other_refusals_are_backend_errors_with_the_services_code(
    stubbed: tuple[EventBridgeSchedules, Stubber],
) -> None:
    schedules, stubber = stubbed
    stubber.add_client_error(
        "create_schedule", service_error_code="AccessDeniedException", http_status_code=403
    )
    with pytest.raises(BackendError) as caught:
        schedules.create_at("n", NOW, "https://q", _message(), job="job 1")
    assert caught.value.code == "AccessDeniedException"


def test_the_at_expression_rounds_up_to_the_second(stubbed: tuple[EventBridgeSchedules, Stubber]) -> None:
    schedules, stubber = stubbed
    stubber.add_response(
        "create_schedule",
        {"ScheduleArn": "arn:aws:scheduler:eu-west-1:1:schedule/orders/n"},
        {
            "Name": "n",
            "GroupName": "orders",
            "ScheduleExpression": "at(2026-12-02T12:00:01)",
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Description": "cloudjobs job 1",
            "Target": {
                "Arn": "arn:aws:scheduler:::aws-sdk:sqs:sendMessage",
                "RoleArn": "arn:aws:iam::1:role/r",
                "Input": '{"QueueUrl":"https://q","MessageBody":"{}"}',
                "RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400},
            },
        },
    )
    schedules.create_at("n", NOW + timedelta(milliseconds=1), "https://q", _message(), job="job 1")
    stubber.assert_no_pending_responses()
