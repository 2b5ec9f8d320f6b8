"""EventBridge Scheduler as the AWS mode of delays and schedules: one-time schedules for jobs due
later than 15 minutes, and the recurring schedules ``cloudjobs schedules sync`` keeps.

Every schedule targets SQS SendMessage through the universal target: its input is the whole
SendMessage request (queue URL, body, message attributes, group), so the envelope and its trace
context arrive as the producer built them. Flexible time windows are off; schedules fire within
about a minute of their time. The scheduler assumes ``CLOUDJOBS_SCHEDULER_ROLE_ARN`` (allowed
``sqs:SendMessage`` on the app's queues, and KMS when they are encrypted) to send; whoever creates a
schedule needs ``iam:PassRole`` on that role.

boto3 is imported when a client is first built, never at import time.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from cloudjobs.aws_errors import error_code, setup_error, setup_errors
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.backends.sqs_messages import send_request
from cloudjobs.errors import BackendError, ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient
    from mypy_boto3_scheduler.type_defs import TargetTypeDef

SEND_MESSAGE_TARGET: Final = "arn:aws:scheduler:::aws-sdk:sqs:sendMessage"
"""The universal target that calls SQS SendMessage with the schedule's input as its request."""
DELAY_PREFIX: Final = "cloudjobs.delay."
"""Names of the one-time schedules of delayed jobs start so; ``schedules sync`` leaves them alone."""
MAX_NAME_LENGTH: Final = 64
RETRY_ATTEMPTS: Final = 185
"""How often the scheduler retries a failed SendMessage (its default, and its maximum)."""
MAX_EVENT_AGE: Final = timedelta(hours=24)
"""How long a one-time schedule's fire is retried (EventBridge Scheduler's limit)."""
_NAME: Final = re.compile(r"[0-9A-Za-z_.-]+")
_NOT_FOUND: Final = frozenset({"ResourceNotFoundException"})
_EXISTS: Final = frozenset({"ConflictException"})


def delay_schedule_name(job_id: str) -> str:
    """The one-time schedule of a delayed job: ``cloudjobs.delay.<job id>``, or a hash of the id when
    it does not fit EventBridge's 64 letters, digits, ``-``, ``_`` and ``.``."""
    room = MAX_NAME_LENGTH - len(DELAY_PREFIX)
    if _NAME.fullmatch(job_id) and len(job_id) <= room:
        return DELAY_PREFIX + job_id
    return DELAY_PREFIX + uuid.uuid5(uuid.NAMESPACE_URL, f"cloudjobs:{job_id}").hex


def send_message_input(queue_url: str, message: OutgoingMessage) -> str:
    """The universal target's input for sending ``message``: the SendMessage request as JSON (binary
    attribute values base64-encoded, as SQS's JSON protocol writes them; its delay is not sent)."""
    request: dict[str, Any] = dict(send_request(queue_url, message))
    attributes: Mapping[str, Mapping[str, Any]] = request.get("MessageAttributes", {})
    for name, value in attributes.items():
        if isinstance(value.get("BinaryValue"), bytes):
            request["MessageAttributes"][name] = {
                "DataType": value["DataType"],
                "BinaryValue": base64.b64encode(value["BinaryValue"]).decode("ascii"),
            }
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule as EventBridge Scheduler keeps it (what ``schedules sync`` compares)."""

    name: str
    expression: str
    timezone: str
    input: str
    role_arn: str
    description: str
    max_event_age: int


class EventBridgeSchedules:
    """The schedules of one schedule group.

    Args:
        group: the schedule group (``CLOUDJOBS_SCHEDULE_GROUP``; the Terraform module creates it).
        role_arn: the role the scheduler assumes to send (``CLOUDJOBS_SCHEDULER_ROLE_ARN``).
        client: a boto3 ``scheduler`` client (default: built on first use).
    """

    def __init__(
        self, *, group: str, role_arn: str, client: EventBridgeSchedulerClient | None = None
    ) -> None:
        self.group = group
        self.role_arn = role_arn
        self._client = client

    @property
    def client(self) -> EventBridgeSchedulerClient:
        """The boto3 client, built on first use."""
        if self._client is None:
            from cloudjobs.aws_clients import create_client

            self._client = create_client("scheduler")
        return self._client

    def create_at(
        self, name: str, at: datetime, queue_url: str, message: OutgoingMessage, *, job: str
    ) -> None:
        """A one-time schedule sending ``message`` to ``queue_url`` at ``at`` (rounded up to the
        second), deleted by the service after it fired. A schedule of that name that exists already
        is this job's, from an earlier try of the same call: it stands.

        Raises:
            ConfigurationError: the group does not exist.
            BackendError: the service refused or could not be reached.
        """
        due = at.astimezone(UTC)
        if due.microsecond:
            due = due.replace(microsecond=0) + timedelta(seconds=1)
        try:
            self.client.create_schedule(
                Name=name,
                GroupName=self.group,
                ScheduleExpression=f"at({due:%Y-%m-%dT%H:%M:%S})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Description=f"cloudjobs {job}"[:512],
                Target=self._target(send_message_input(queue_url, message), MAX_EVENT_AGE),
            )
        except Exception as exc:
            if error_code(exc) in _EXISTS:
                return
            raise self._error(exc, f"creating schedule {name}") from exc

    def delete(self, name: str) -> bool:
        """Delete a schedule; False when there is none of that name (fired, deleted, never made).

        Raises:
            BackendError: the service refused or could not be reached.
        """
        try:
            self.client.delete_schedule(Name=name, GroupName=self.group)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return False
            raise self._error(exc, f"deleting schedule {name}") from exc
        return True

    def names(self) -> Iterator[str]:
        """The names of the group's schedules (every page).

        Raises:
            ConfigurationError: the group does not exist.
            BackendError: the service refused or could not be reached.
        """
        try:
            for page in self.client.get_paginator("list_schedules").paginate(GroupName=self.group):
                for summary in page.get("Schedules", []):
                    if "Name" in summary:
                        yield summary["Name"]
        except Exception as exc:
            raise self._error(exc, "listing schedules") from exc

    def get(self, name: str) -> StoredSchedule | None:
        """A schedule as stored, or None when there is none of that name.

        Raises:
            BackendError: the service refused or could not be reached.
        """
        try:
            answer = self.client.get_schedule(Name=name, GroupName=self.group)
        except Exception as exc:
            if error_code(exc) in _NOT_FOUND:
                return None
            raise self._error(exc, f"reading schedule {name}") from exc
        target = answer.get("Target", {})
        return StoredSchedule(
            name=name,
            expression=answer.get("ScheduleExpression", ""),
            timezone=answer.get("ScheduleExpressionTimezone", "UTC"),
            input=target.get("Input", ""),
            role_arn=target.get("RoleArn", ""),
            description=answer.get("Description", ""),
            max_event_age=target.get("RetryPolicy", {}).get("MaximumEventAgeInSeconds", 0),
        )

    def put(self, wanted: StoredSchedule, *, exists: bool) -> None:
        """Create (or, when it ``exists``, update) a recurring schedule to match ``wanted``.

        Raises:
            ConfigurationError: the group does not exist.
            BackendError: the service refused or could not be reached.
        """
        request: dict[str, Any] = {
            "Name": wanted.name,
            "GroupName": self.group,
            "ScheduleExpression": wanted.expression,
            "ScheduleExpressionTimezone": wanted.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Description": wanted.description,
            "Target": self._target(wanted.input, timedelta(seconds=wanted.max_event_age)),
        }
        try:
            if exists:
                self.client.update_schedule(**request)
            else:
                self.client.create_schedule(**request)
        except Exception as exc:
            raise self._error(exc, f"{'updating' if exists else 'creating'} schedule {wanted.name}") from exc

    def _target(self, payload: str, max_event_age: timedelta) -> TargetTypeDef:
        return {
            "Arn": SEND_MESSAGE_TARGET,
            "RoleArn": self.role_arn,
            "Input": payload,
            "RetryPolicy": {
                "MaximumRetryAttempts": RETRY_ATTEMPTS,
                "MaximumEventAgeInSeconds": int(max_event_age.total_seconds()),
            },
        }

    def _error(self, exc: Exception, doing: str) -> Exception:
        if isinstance(exc, setup_errors()):
            return setup_error(exc)
        code = error_code(exc)
        if code in _NOT_FOUND:
            return ConfigurationError(
                f"{doing}: schedule group {self.group!r} does not exist (create it, e.g. with the "
                f"Terraform module, or set CLOUDJOBS_SCHEDULE_GROUP): {exc}",
                setting="schedule_group",
            )
        return BackendError(f"EventBridge Scheduler: {doing} failed: {exc}", code=code)


class EventBridgeDelays:
    """Delayed jobs of one queue sent by one-time schedules (the producer's
    :class:`~cloudjobs.producer.LaterSends`): one CreateSchedule per job, named after it
    (:func:`delay_schedule_name`), so ``jobs.cancel`` can delete it.

    Args:
        schedules: the app's schedule group.
        queue_url: the queue's URL, read when the first job is scheduled.
    """

    def __init__(self, schedules: EventBridgeSchedules, queue_url: Callable[[], str]) -> None:
        self.schedules = schedules
        self._queue_url = queue_url

    def send_at(self, job_id: str, at: datetime, message: OutgoingMessage) -> None:
        """Create the job's one-time schedule (an existing one of its name stands).

        Raises:
            ConfigurationError: the schedule group does not exist.
            BackendError: the service refused or could not be reached.
        """
        self.schedules.create_at(
            delay_schedule_name(job_id), at, self._queue_url(), message, job=f"job {job_id}"
        )
