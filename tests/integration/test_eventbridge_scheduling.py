"""The AWS mode of scheduling, over HTTP against moto's SQS, DynamoDB and EventBridge Scheduler.

Long delays (``CLOUDJOBS_LONG_DELAYS=eventbridge``) become one-time schedules; ``cloudjobs
schedules sync`` keeps the recurring ones. No emulator fires schedules, so these tests deliver a
stored target input to SQS as the service does -- placeholders substituted, SendMessage called with
the input as its request -- and then let a real worker run the job.
"""

from __future__ import annotations

import importlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, JobState, Settings
from cloudjobs.cli.exit_codes import EXIT_OK, EXIT_USAGE
from cloudjobs.cli.main import main as cli_main
from cloudjobs.envelope import decode
from cloudjobs.errors import ConfigurationError, InvalidDelayError
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from cloudjobs.scheduling.eventbridge import DELAY_PREFIX, SEND_MESSAGE_TARGET, delay_schedule_name
from tests.behaviour.conftest import running, wait_for
from tests.otel import Capture

if TYPE_CHECKING:
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient
    from mypy_boto3_sqs.client import SQSClient

ROLE_ARN = "arn:aws:iam::123456789012:role/orders-scheduler"


class Reminder(BaseModel):
    user: str


@pytest.fixture
def scheduler_client(aws_environment: dict[str, str]) -> Iterator[EventBridgeSchedulerClient]:
    client: EventBridgeSchedulerClient = boto3.session.Session().client("scheduler")
    yield client
    client.close()


@pytest.fixture
def group(scheduler_client: EventBridgeSchedulerClient) -> Iterator[str]:
    """A schedule group, as the Terraform module creates one per app."""
    name = f"orders-{uuid.uuid4().hex[:8]}"
    scheduler_client.create_schedule_group(Name=name)
    yield name
    scheduler_client.delete_schedule_group(Name=name)


@pytest.fixture
def table(aws_environment: dict[str, str]) -> Iterator[str]:
    client = boto3.session.Session().client("dynamodb")
    spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
    provision_table(spec, client=client)
    yield spec.name
    delete_table(spec, client=client)
    client.close()


def _settings(queue: ProvisionedQueue, table: str, group: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "queue_url": queue.queue_url,
        "idempotency_table": table,
        "long_delays": "eventbridge",
        "schedule_group": group,
        "scheduler_role_arn": ROLE_ARN,
        "wait_time_seconds": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def _app(settings: Settings, runs: list[Job] | None = None) -> CloudJobs:
    jobs = CloudJobs(settings=settings)
    lock = threading.Lock()

    @jobs.job("remind", idempotent=True)
    def remind(payload: Reminder, job: Job) -> str:
        with lock:
            if runs is not None:
                runs.append(job)
        return payload.user

    @jobs.job("nudge", track_status=True)
    def nudge(payload: Reminder) -> None: ...

    return jobs


def _schedules(client: EventBridgeSchedulerClient, group: str) -> dict[str, Any]:
    names = [item["Name"] for item in client.list_schedules(GroupName=group)["Schedules"]]
    return {name: client.get_schedule(Name=name, GroupName=group) for name in names}


def _deliver(client: SQSClient, target_input: str, substitutions: Mapping[str, str]) -> None:
    """What EventBridge Scheduler does at a fire: fill in the placeholders, call SendMessage."""
    for placeholder, value in substitutions.items():
        target_input = target_input.replace(placeholder, value)
    client.send_message(**json.loads(target_input))


def _visible(client: SQSClient, queue_url: str) -> int:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


# -- long delays ------------------------------------------------------------------------------------


def test_a_long_delay_is_one_schedule_whose_input_runs_the_job_once_even_when_retried(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    scheduler_client: EventBridgeSchedulerClient,
    sqs_client: SQSClient,
    otel: Capture,
) -> None:
    queue = make_queue()
    runs: list[Job] = []
    jobs = _app(_settings(queue, table, group), runs)
    before = datetime.now(UTC)
    job_id = jobs.enqueue("remind", Reminder(user="ada"), delay=timedelta(days=3))

    assert _visible(sqs_client, queue.queue_url) == 0  # nothing in the queue until the schedule fires
    stored = _schedules(scheduler_client, group)
    assert list(stored) == [delay_schedule_name(job_id)]
    schedule = stored[delay_schedule_name(job_id)]
    due = datetime.strptime(schedule["ScheduleExpression"], "at(%Y-%m-%dT%H:%M:%S)").replace(tzinfo=UTC)
    assert before + timedelta(days=3) <= due + timedelta(seconds=1)
    assert due <= datetime.now(UTC) + timedelta(days=3, seconds=1)
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule.get("ActionAfterCompletion") == "DELETE"
    target = schedule["Target"]
    assert target["Arn"] == SEND_MESSAGE_TARGET
    assert target["RoleArn"] == ROLE_ARN
    request = json.loads(target["Input"])
    assert request["QueueUrl"] == queue.queue_url
    envelope = decode(request["MessageBody"])
    assert envelope.id == job_id
    assert envelope.due_at is None  # sent when due: no hop
    # The enqueue's trace context travels unchanged, to the handler's span.
    traceparent = request["MessageAttributes"]["traceparent"]["StringValue"]
    assert request["MessageAttributes"]["cloudjobs.id"]["StringValue"] == job_id

    # The service retries its target when a SendMessage seemed to fail: the job arrives twice.
    _deliver(sqs_client, target["Input"], {})
    _deliver(sqs_client, target["Input"], {})
    # One at a time: moto's DynamoDB does not serialise concurrent conditional writes.
    with running(jobs, concurrency=1):
        wait_for(lambda: len(runs) == 1 and _visible(sqs_client, queue.queue_url) == 0)
    assert [run.id for run in runs] == [job_id]
    assert runs[0].attempt == 1
    enqueue_trace = traceparent.split("-")[1]
    handled = [
        span for span in otel.spans() if span.attributes and span.attributes.get("cloudjobs.job.id") == job_id
    ]
    assert handled
    assert any(format(span.context.trace_id, "032x") == enqueue_trace for span in handled)


def test_cancelling_a_job_waiting_in_a_schedule_deletes_the_schedule(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    scheduler_client: EventBridgeSchedulerClient,
) -> None:
    jobs = _app(_settings(make_queue(), table, group, status_tracking=True))
    kept = jobs.enqueue("nudge", Reminder(user="kept"), delay=timedelta(hours=2))
    job_id = jobs.enqueue("nudge", Reminder(user="bob"), delay=timedelta(hours=2))
    status = jobs.status(job_id)
    assert status is not None
    assert status.state is JobState.SCHEDULED
    assert status.due_at is not None

    cancellation = jobs.cancel(job_id)

    assert cancellation.schedule_deleted
    assert set(_schedules(scheduler_client, group)) == {delay_schedule_name(kept)}
    assert jobs.cancel(job_id).schedule_deleted is False  # nothing left to delete


def test_short_delays_stay_in_the_queue_and_fifo_delays_become_schedules_with_their_group(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    scheduler_client: EventBridgeSchedulerClient,
    sqs_client: SQSClient,
) -> None:
    standard = make_queue()
    _app(_settings(standard, table, group)).enqueue("remind", Reminder(user="a"), delay=60)
    assert _visible(sqs_client, standard.queue_url) == 1
    assert _schedules(scheduler_client, group) == {}

    fifo = make_queue(fifo=True)
    with pytest.raises(InvalidDelayError, match="FIFO"):
        _app(_settings(fifo, table, group, long_delays="hops")).enqueue(
            "remind", Reminder(user="b"), delay=timedelta(hours=1)
        )
    job_id = _app(_settings(fifo, table, group)).enqueue(
        "remind", Reminder(user="b"), delay=timedelta(hours=1), group_id="user-b"
    )
    request = json.loads(_schedules(scheduler_client, group)[delay_schedule_name(job_id)]["Target"]["Input"])
    assert request["MessageGroupId"] == "user-b"
    assert request["MessageDeduplicationId"] == job_id
    assert _visible(sqs_client, fifo.queue_url) == 0


def test_a_missing_group_or_role_is_a_configuration_error_naming_the_setting(
    make_queue: Callable[..., ProvisionedQueue], table: str, sqs_client: SQSClient
) -> None:
    queue = make_queue()
    with pytest.raises(ConfigurationError, match="CLOUDJOBS_SCHEDULE_GROUP"):
        _app(_settings(queue, table, None)).enqueue("remind", Reminder(user="a"), delay=timedelta(days=1))
    with pytest.raises(ConfigurationError, match="CLOUDJOBS_SCHEDULER_ROLE_ARN"):
        _app(_settings(queue, table, "any", scheduler_role_arn=None)).enqueue(
            "remind", Reminder(user="a"), delay=timedelta(days=1)
        )
    assert _visible(sqs_client, queue.queue_url) == 0  # nothing sent in their place


# -- recurring schedules: schedules sync ------------------------------------------------------------


def _write_app(tmp_path: Any, module: str, schedules: str) -> str:
    source = f"""
from cloudjobs import CloudJobs, Job

jobs = CloudJobs()


@jobs.job("report", idempotent=True)
def report(payload: dict, job: Job) -> str:
    RUNS.append((job.id, job.idempotency_key, job.correlation_id))
    return job.id


RUNS: list = []
{schedules}
"""
    (tmp_path / f"{module}.py").write_text(source)
    return f"{module}:jobs"


def _sync_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, queue: ProvisionedQueue, table: str, group: str
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLOUDJOBS_QUEUE_URL", queue.queue_url)
    monkeypatch.setenv("CLOUDJOBS_IDEMPOTENCY_TABLE", table)
    monkeypatch.setenv("CLOUDJOBS_SCHEDULES_MODE", "eventbridge")
    monkeypatch.setenv("CLOUDJOBS_SCHEDULE_GROUP", group)
    monkeypatch.setenv("CLOUDJOBS_SCHEDULER_ROLE_ARN", ROLE_ARN)


def _recorded(calls: list[str]) -> Callable[..., None]:
    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    return record


def test_sync_creates_updates_and_deletes_schedules_to_match_the_code(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    scheduler_client: EventBridgeSchedulerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    queue = make_queue()
    _sync_environment(monkeypatch, tmp_path, queue, table, group)
    first = _write_app(
        tmp_path,
        "sync_first",
        """
jobs.schedule("nightly", cron="30 1 * * 1-5", tz="Europe/Berlin", job_type="report", payload={"n": 1})
jobs.schedule("often", every=300, job_type="report")
jobs.schedule("gone-soon", every=7 * 60, job_type="report")
""",
    )
    # A delayed job's one-time schedule in the same group: sync leaves it alone.
    scheduler_client.create_schedule(
        Name=f"{DELAY_PREFIX}{uuid.uuid4()}",
        GroupName=group,
        ScheduleExpression="at(2030-01-01T00:00:00)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": SEND_MESSAGE_TARGET, "RoleArn": ROLE_ARN, "Input": "{}"},
    )
    calls: list[str] = []
    session_client = boto3.session.Session.client

    def recorded_client(self: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = session_client(self, *args, **kwargs)
        if client.meta.service_model.service_name == "scheduler":
            client.meta.events.register("before-parameter-build", _recorded(calls))
        return client

    monkeypatch.setattr(boto3.session.Session, "client", recorded_client)

    assert cli_main(["schedules", "sync", first]) == EXIT_OK
    stored = _schedules(scheduler_client, group)
    assert calls.count("CreateSchedule") == 3
    assert "UpdateSchedule" not in calls
    assert "DeleteSchedule" not in calls
    mine = {name: item for name, item in stored.items() if not name.startswith(DELAY_PREFIX)}
    assert {
        name: (item["ScheduleExpression"], item["ScheduleExpressionTimezone"]) for name, item in mine.items()
    } == {
        "nightly": ("cron(30 1 ? * 2,3,4,5,6 *)", "Europe/Berlin"),
        "often": ("cron(0/5 * * * ? *)", "UTC"),
        "gone-soon": ("rate(7 minutes)", "UTC"),
    }
    nightly = mine["nightly"]
    assert nightly["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert nightly["Target"]["Arn"] == SEND_MESSAGE_TARGET
    request = json.loads(nightly["Target"]["Input"])
    assert request["QueueUrl"] == queue.queue_url
    body = json.loads(request["MessageBody"])
    assert body["id"] == "schedule:nightly@<aws.scheduler.scheduled-time>"
    assert body["idempotency_key"] == body["id"]
    assert body["payload"] == {"n": 1}

    # Nothing changed in the code: a second sync reads and writes nothing.
    calls.clear()
    assert cli_main(["schedules", "sync", first]) == EXIT_OK
    assert not {"CreateSchedule", "UpdateSchedule", "DeleteSchedule"} & set(calls)

    second = _write_app(
        tmp_path,
        "sync_second",
        """
jobs.schedule("nightly", cron="0 3 * * *", tz="Europe/Berlin", job_type="report", payload={"n": 1})
jobs.schedule("often", every=300, job_type="report")
jobs.schedule("new", cron="0 12 1 * *", job_type="report")
""",
    )
    calls.clear()
    assert cli_main(["schedules", "sync", second]) == EXIT_OK
    assert sorted(call for call in calls if call.endswith("Schedule") and call != "GetSchedule") == [
        "CreateSchedule",
        "DeleteSchedule",
        "UpdateSchedule",
    ]
    stored = _schedules(scheduler_client, group)
    assert {name for name in stored if not name.startswith(DELAY_PREFIX)} == {"nightly", "often", "new"}
    assert stored["nightly"]["ScheduleExpression"] == "cron(0 3 * * ? *)"
    assert stored["new"]["ScheduleExpression"] == "cron(0 12 1 * ? *)"
    assert sum(name.startswith(DELAY_PREFIX) for name in stored) == 1


def test_sync_refuses_what_eventbridge_cannot_fire_and_changes_nothing(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    scheduler_client: EventBridgeSchedulerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _sync_environment(monkeypatch, tmp_path, make_queue(), table, group)
    app = _write_app(
        tmp_path,
        "sync_refused",
        """
jobs.schedule("fine", every=600, job_type="report")
jobs.schedule("fast", every=30, job_type="report")
jobs.schedule("both-days", cron="0 8 1 * 1", job_type="report")
jobs.schedule("exclusive", every=600, job_type="report", overlap="skip")
""",
    )
    assert cli_main(["schedules", "sync", app]) == EXIT_USAGE
    error = capsys.readouterr().err
    for name, reason in (
        ("fast", "whole minutes"),
        ("both-days", "both day-of-month"),
        ("exclusive", "overlap"),
    ):
        assert f"schedule {name!r}" in error
        assert reason in error
    assert _schedules(scheduler_client, group) == {}


def test_sync_and_the_self_hosted_scheduler_refuse_each_others_mode(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    _sync_environment(monkeypatch, tmp_path, make_queue(), table, group)
    declared = 'jobs.schedule("fine", every=600, job_type="report")'
    app = _write_app(tmp_path, "sync_modes", declared)
    assert cli_main(["scheduler", app, "--once"]) == EXIT_USAGE  # EventBridge fires these
    monkeypatch.setenv("CLOUDJOBS_SCHEDULES_MODE", "self-hosted")
    app = _write_app(tmp_path, "sync_modes_self_hosted", declared)  # settings are read once per app
    assert cli_main(["schedules", "sync", app]) == EXIT_USAGE  # cloudjobs scheduler fires these


def test_a_synced_fire_delivered_as_the_service_would_runs_once_under_the_ticks_id(
    make_queue: Callable[..., ProvisionedQueue],
    table: str,
    group: str,
    scheduler_client: EventBridgeSchedulerClient,
    sqs_client: SQSClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    queue = make_queue()
    _sync_environment(monkeypatch, tmp_path, queue, table, group)
    app = _write_app(tmp_path, "sync_fire", 'jobs.schedule("nightly", cron="0 2 * * *", job_type="report")')
    assert cli_main(["schedules", "sync", app]) == EXIT_OK
    target_input = scheduler_client.get_schedule(Name="nightly", GroupName=group)["Target"]["Input"]

    sync_fire: Any = importlib.import_module("sync_fire")  # the app module the command loaded

    tick = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
    fire = {
        "<aws.scheduler.scheduled-time>": "2026-12-03T02:00:00Z",
        "<aws.scheduler.execution-id>": "exec-1",
    }
    _deliver(sqs_client, target_input, fire)
    _deliver(sqs_client, target_input, {**fire, "<aws.scheduler.execution-id>": "exec-2"})  # a retry

    schedule = sync_fire.jobs.schedules[0]
    with running(sync_fire.jobs, concurrency=1):
        wait_for(lambda: len(sync_fire.RUNS) == 1 and _visible(sqs_client, queue.queue_url) == 0)
    job_id, key, correlation_id = sync_fire.RUNS[0]
    assert job_id == schedule.job_id(tick) == "schedule:nightly@2026-12-03T02:00:00Z"
    assert key == job_id  # the self-hosted scheduler's id and key for the same tick
    assert correlation_id == "exec-1"
    assert len(sync_fire.RUNS) == 1
