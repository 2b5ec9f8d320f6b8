"""``cloudjobs schedules sync``: the app's recurring schedules, kept in EventBridge Scheduler.

Each schedule declared with ``jobs.schedule(...)`` becomes one EventBridge schedule of the same
name in the app's schedule group (``CLOUDJOBS_SCHEDULE_GROUP``); a schedule of the group that the
code no longer declares is deleted (the one-time schedules of delayed jobs, named
``cloudjobs.delay.*``, are left alone). A sync reads the group (one ListSchedules page per 100
schedules, one GetSchedule per declared schedule that exists) and writes only what differs.

Each schedule's target input is a SendMessage request whose body is the envelope of a fire with two
placeholders the service fills in at each invocation: ``<aws.scheduler.scheduled-time>`` makes the
job id (and idempotency key) ``schedule:<name>@<scheduled time>`` -- the very id the self-hosted
scheduler gives the tick, so a retried invocation is one job -- and ``<aws.scheduler.execution-id>``
is the correlation id. There is no trace context: a fire starts its own trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from cloudjobs.backends.base import OutgoingMessage, message_size
from cloudjobs.envelope import Envelope, encode, envelope_attributes
from cloudjobs.errors import ConfigurationError, InvalidScheduleError, PayloadTooLargeError
from cloudjobs.groups import message_group
from cloudjobs.scheduling.definition import Overlap, Schedule
from cloudjobs.scheduling.eventbridge import (
    DELAY_PREFIX,
    EventBridgeSchedules,
    StoredSchedule,
    send_message_input,
)
from cloudjobs.scheduling.expressions import UntranslatableScheduleError, eventbridge_expression

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs

SCHEDULED_TIME: Final = "<aws.scheduler.scheduled-time>"
EXECUTION_ID: Final = "<aws.scheduler.execution-id>"
MIN_EVENT_AGE: Final = 60
"""EventBridge's shortest retry window (seconds): a misfire grace below it is raised to it."""
_MAX_EVENT_AGE: Final = 86_400
_PLACEHOLDER_TIME: Final = datetime(2001, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync changes in the schedule group."""

    create: list[StoredSchedule] = field(default_factory=list)
    update: list[StoredSchedule] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        """How many schedules the sync creates, updates or deletes."""
        return len(self.create) + len(self.update) + len(self.delete)


def wanted_schedules(app: CloudJobs, role_arn: str) -> list[StoredSchedule]:
    """Every declared schedule as EventBridge Scheduler should keep it.

    Raises:
        InvalidScheduleError: one or more schedules cannot be synced; the message lists each with
            its reason (nothing is changed).
        ConfigurationError: a schedule's job type goes to a queue that is not an SQS queue.
        BackendError: a queue's configuration could not be read.
    """
    wanted: list[StoredSchedule] = []
    refusals: list[str] = []
    for schedule in app.schedules:
        try:
            wanted.append(_wanted(app, schedule, role_arn))
        except InvalidScheduleError as exc:
            refusals.append(str(exc))
    if refusals:
        raise InvalidScheduleError(
            "cannot sync to EventBridge Scheduler; nothing was changed:\n  " + "\n  ".join(refusals),
            schedule="*",
        )
    return wanted


def plan_sync(wanted: list[StoredSchedule], schedules: EventBridgeSchedules) -> SyncPlan:
    """Compare the wanted schedules with the group's (reads only).

    Raises:
        ConfigurationError: the group does not exist.
        BackendError: the service refused or could not be reached.
    """
    existing = {name for name in schedules.names() if not name.startswith(DELAY_PREFIX)}
    plan = SyncPlan()
    for schedule in wanted:
        stored = schedules.get(schedule.name) if schedule.name in existing else None
        if stored is None:
            plan.create.append(schedule)
        elif _same(stored, schedule):
            plan.unchanged.append(schedule.name)
        else:
            plan.update.append(schedule)
    declared = {schedule.name for schedule in wanted}
    plan.delete.extend(sorted(existing - declared))
    return plan


def apply_sync(plan: SyncPlan, schedules: EventBridgeSchedules) -> None:
    """Make the changes of ``plan``: creations and updates first, deletions last.

    Raises:
        ConfigurationError: the group does not exist.
        BackendError: the service refused a change (the ones before it stand; sync again).
    """
    for schedule in plan.create:
        schedules.put(schedule, exists=False)
    for schedule in plan.update:
        schedules.put(schedule, exists=True)
    for name in plan.delete:
        schedules.delete(name)


def _wanted(app: CloudJobs, schedule: Schedule, role_arn: str) -> StoredSchedule:
    if schedule.overlap is Overlap.SKIP:
        raise UntranslatableScheduleError(
            "cannot be synced to EventBridge Scheduler: overlap='skip' needs the self-hosted "
            "scheduler (EventBridge fires every tick)",
            schedule=schedule.name,
            setting="overlap",
        )
    expression = eventbridge_expression(schedule)
    job_id = f"schedule:{schedule.name}@{SCHEDULED_TIME}"
    request = app._tick_request(schedule, job_id)
    backend = app.backend_of(request.queue)
    from cloudjobs.backends.sqs import SqsBackend

    if not isinstance(backend, SqsBackend):
        raise ConfigurationError(
            f"schedule {schedule.name!r}: its queue {request.queue!r} is not an SQS queue", setting="queues"
        )
    info = backend.info()
    envelope = Envelope(
        id=job_id,
        type=request.job_type,
        payload=request.payload,
        correlation_id=EXECUTION_ID,
        enqueued_at=_PLACEHOLDER_TIME,
        idempotency_key=job_id,
    )
    fields = json.loads(encode(envelope))
    fields["enqueued_at"] = SCHEDULED_TIME
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    attributes = envelope_attributes(envelope)
    size = message_size(body, attributes)
    if size > info.max_message_size:
        raise PayloadTooLargeError(job_name=request.job_type, size=size, limit=info.max_message_size)
    message = OutgoingMessage(
        body=body,
        attributes=attributes,
        group_id=message_group(
            is_fifo=info.is_fifo,
            job_type=request.job_type,
            group_id=request.group_id,
            tenant=request.tenant,
            default_group_id=app.settings.message_group_id,
        ),
        deduplication_id=job_id if info.is_fifo else None,
    )
    # A fire the service cannot deliver within the misfire grace is dropped, as a self-hosted one is missed.
    grace = int(schedule.misfire_grace.total_seconds())
    return StoredSchedule(
        name=schedule.name,
        expression=expression.expression,
        timezone=expression.timezone,
        input=send_message_input(backend.queue_url(), message),
        role_arn=role_arn,
        description=f"cloudjobs schedule {schedule.name}: {schedule.expression} ({schedule.job_type})"[:512],
        max_event_age=min(max(grace, MIN_EVENT_AGE), _MAX_EVENT_AGE),
    )


def _same(stored: StoredSchedule, wanted: StoredSchedule) -> bool:
    """Whether a stored schedule matches (inputs compared as JSON: the service may reformat them)."""
    try:
        same_input = json.loads(stored.input) == json.loads(wanted.input)
    except ValueError:
        same_input = False
    return same_input and _fields(stored) == _fields(wanted)


def _fields(schedule: StoredSchedule) -> tuple[object, ...]:
    """A stored schedule's fields but its input."""
    return (
        schedule.name,
        schedule.expression,
        schedule.timezone,
        schedule.role_arn,
        schedule.description,
        schedule.max_event_age,
    )
