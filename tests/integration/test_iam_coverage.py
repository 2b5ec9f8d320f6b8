"""Every AWS call a role's code makes is granted by that role's policy in the Terraform module.

Each role's code paths (a producer enqueueing and reading status, a worker and a Lambda function
consuming, an operator running the CLI) run here over HTTP against the session's moto server, with the
settings the module's ``environment`` output gives. A botocore hook records each operation; the
:data:`OPERATIONS` table turns it into the IAM action(s) and resource(s) AWS authorises it on; the
module's policy document for the role, parsed from the HCL, must grant every one of them, with and
without a customer-managed KMS key. A grant no code path uses is listed in
:data:`GRANTED_BUT_UNUSED` with the reason it stays, so a new grant is reviewed the day it appears.

A new feature adds its API operations to :data:`OPERATIONS` and its code paths with
:func:`code_path`; nothing else here changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from pydantic import BaseModel

from cloudjobs import (
    CloudJobs,
    Job,
    JobNotTrackedError,
    JobState,
    PermanentError,
    ResultTimeoutError,
    RetryableError,
    Settings,
)
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cloudjobs.cli.main import main as cli_main
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import (
    TABLE_JOB_ID_INDEX,
    ProvisionedQueue,
    QueueSpec,
    TableSpec,
    delete_queue,
    delete_table,
    provision_queue,
    provision_table,
)
from cloudjobs.scheduling.eventbridge import DELAY_PREFIX
from cloudjobs.scheduling.sync import apply_sync, plan_sync, wanted_schedules
from tests.behaviour.conftest import running, wait_for
from tests.infra.terraform import MODULE, Configuration, parse, statements
from tests.integration.test_lambda_end_to_end import EventSourceMapping

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_scheduler.client import EventBridgeSchedulerClient
    from mypy_boto3_sqs.client import SQSClient

# ---------------------------------------------------------------------------------------------------
# Operation → IAM action and resource
# ---------------------------------------------------------------------------------------------------


class Resource(StrEnum):
    """What a grant is on, spelt as the module's policy documents spell it."""

    QUEUE = "${aws_sqs_queue.this.arn}"
    DLQ = "${aws_sqs_queue.dlq.arn}"
    TABLE = "${local.table_arn}"  # the table created here, or the shared one (create_table = false)
    INDEX = "${local.table_index_arn}"
    KEY = "${var.kms_key_arn}"
    SCHEDULES = "${local.schedules_arn}"  # every schedule of the app's group
    DELAY_SCHEDULES = "${local.delay_schedules_arn}"  # the one-time schedules of delayed jobs
    SCHEDULER_ROLE = "${local.scheduler_role_arn}"
    PAYLOADS = "${local.payload_objects_arn}"  # bodies cloudjobs stores (under cloudjobs/)
    ANY_PAYLOAD = "${local.payload_any_arn}"  # any body in the payload bucket
    ANY = "*"


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One IAM action on one resource."""

    action: str
    resource: Resource

    def __str__(self) -> str:
        return f"{self.action} on {self.resource.name.lower()}"


@dataclass(frozen=True, slots=True)
class Authorisation:
    """How IAM authorises one API operation.

    Attributes:
        action: the IAM action (batch operations are authorised as their single action).
        target: the request parameter naming the resource (``QueueUrl``, ``QueueName``,
            ``SourceArn``, ``TableName``: a ``Query`` with ``IndexName`` is on the index), or None
            for an action without resource-level permissions.
        kms: the KMS actions the service performs with the caller's rights when the resource is
            encrypted with a customer-managed key.
        also: further ``(action, parameter)`` pairs AWS checks for this operation.
    """

    action: str
    target: str | None
    kms: frozenset[str] = frozenset()
    also: tuple[tuple[str, str], ...] = ()


# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html:
# a producer needs GenerateDataKey and Decrypt, a consumer Decrypt.
_SQS_SEND_KMS: Final = frozenset({"kms:GenerateDataKey", "kms:Decrypt"})
_SQS_RECEIVE_KMS: Final = frozenset({"kms:Decrypt"})
# DynamoDB decrypts the table key with the caller's rights on item reads and writes.
_DYNAMODB_KMS: Final = frozenset({"kms:Decrypt"})

OPERATIONS: Final[Mapping[str, Authorisation]] = {
    "sqs.GetQueueUrl": Authorisation("sqs:GetQueueUrl", "QueueName"),
    "sqs.GetQueueAttributes": Authorisation("sqs:GetQueueAttributes", "QueueUrl"),
    "sqs.SendMessage": Authorisation("sqs:SendMessage", "QueueUrl", kms=_SQS_SEND_KMS),
    "sqs.SendMessageBatch": Authorisation("sqs:SendMessage", "QueueUrl", kms=_SQS_SEND_KMS),
    "sqs.ReceiveMessage": Authorisation("sqs:ReceiveMessage", "QueueUrl", kms=_SQS_RECEIVE_KMS),
    "sqs.DeleteMessage": Authorisation("sqs:DeleteMessage", "QueueUrl"),
    "sqs.DeleteMessageBatch": Authorisation("sqs:DeleteMessage", "QueueUrl"),
    "sqs.ChangeMessageVisibility": Authorisation("sqs:ChangeMessageVisibility", "QueueUrl"),
    "sqs.ChangeMessageVisibilityBatch": Authorisation("sqs:ChangeMessageVisibility", "QueueUrl"),
    "sqs.PurgeQueue": Authorisation("sqs:PurgeQueue", "QueueUrl"),
    # A move task receives and deletes on the source and sends to the destination with the caller's
    # rights (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-configure-dead-letter-queue-redrive.html).
    "sqs.StartMessageMoveTask": Authorisation(
        "sqs:StartMessageMoveTask",
        "SourceArn",
        kms=_SQS_SEND_KMS,
        also=(
            ("sqs:ReceiveMessage", "SourceArn"),
            ("sqs:DeleteMessage", "SourceArn"),
            ("sqs:GetQueueAttributes", "SourceArn"),
            ("sqs:SendMessage", "DestinationArn"),
        ),
    ),
    "sqs.ListMessageMoveTasks": Authorisation("sqs:ListMessageMoveTasks", "SourceArn"),
    "dynamodb.GetItem": Authorisation("dynamodb:GetItem", "TableName", kms=_DYNAMODB_KMS),
    "dynamodb.BatchGetItem": Authorisation("dynamodb:BatchGetItem", "TableName", kms=_DYNAMODB_KMS),
    "dynamodb.PutItem": Authorisation("dynamodb:PutItem", "TableName", kms=_DYNAMODB_KMS),
    "dynamodb.UpdateItem": Authorisation("dynamodb:UpdateItem", "TableName", kms=_DYNAMODB_KMS),
    "dynamodb.DeleteItem": Authorisation("dynamodb:DeleteItem", "TableName", kms=_DYNAMODB_KMS),
    "dynamodb.Query": Authorisation("dynamodb:Query", "TableName", kms=_DYNAMODB_KMS),
    # GetMetricData has no resource-level permissions.
    "cloudwatch.GetMetricData": Authorisation("cloudwatch:GetMetricData", None),
    # Creating or updating a schedule passes the role its target names
    # (https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html).
    "scheduler.CreateSchedule": Authorisation(
        "scheduler:CreateSchedule", "Name", also=(("iam:PassRole", "RoleArn"),)
    ),
    "scheduler.UpdateSchedule": Authorisation(
        "scheduler:UpdateSchedule", "Name", also=(("iam:PassRole", "RoleArn"),)
    ),
    "scheduler.DeleteSchedule": Authorisation("scheduler:DeleteSchedule", "Name"),
    "scheduler.GetSchedule": Authorisation("scheduler:GetSchedule", "Name"),
    # ListSchedules has no resource-level permissions.
    "scheduler.ListSchedules": Authorisation("scheduler:ListSchedules", None),
    # SSE-KMS: S3 asks KMS for a data key on a write and decrypts it on a read, with the caller's rights.
    "s3.PutObject": Authorisation("s3:PutObject", "Key", kms=frozenset({"kms:GenerateDataKey"})),
    "s3.GetObject": Authorisation("s3:GetObject", "Key", kms=frozenset({"kms:Decrypt"})),
    "s3.DeleteObject": Authorisation("s3:DeleteObject", "Key"),
}

GRANTED_BUT_UNUSED: Final[Mapping[str, frozenset[Grant]]] = {
    "producer": frozenset(),
    # The scheduler (run with the consumer's role) reads its records with GetItem and the previous
    # run's status with a Query on the index, so the consumer's grants are all used.
    "consumer": frozenset(),
    # A redrive cancels its move task once it moved the count SQS read at its start; moto has no move
    # tasks, and this test's stand-in reports each task finished, so the cancel is never reached here
    # (tests/infra checks the grant; tests/unit/test_dlq_move_task.py the call).
    "operator": frozenset({Grant("sqs:CancelMessageMoveTask", Resource.DLQ)}),
    "scheduler": frozenset(),
}
"""Grants no code path here uses, each kept for a reason given beside it."""


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded API call: ``service.Operation`` and the request parameters naming resources."""

    operation: str
    parameters: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Stack:
    """The resources the module creates, provisioned on the moto server for one code path."""

    queue: ProvisionedQueue
    table: str
    environment: Mapping[str, str]
    group: str | None = None
    """The EventBridge Scheduler schedule group (with ``eventbridge_scheduler`` only)."""
    bucket: str | None = None
    """The payload bucket (with ``payload_bucket`` only)."""
    payload_delete: bool = False

    def settings(self, **overrides: Any) -> Settings:
        """The settings the module's ``environment`` output gives (``CLOUDJOBS_*``), with overrides."""
        values: dict[str, Any] = {
            "queue_url": self.queue.queue_url,
            "dlq_url": self.queue.dlq_url,
            "idempotency_table": self.table,
            "wait_time_seconds": 1,
            "backoff_base_seconds": 0.2,
            "backoff_cap_seconds": 0.5,
        }
        if self.group is not None:
            values.update(self.eventbridge_environment())
        if self.bucket is not None:
            values.update(self.payload_environment())
        values.update(overrides)
        return Settings(_env_file=None, **values)

    def environment_output(self, *, status_tracking: bool = False) -> dict[str, str]:
        """The module's ``environment`` output for this stack, as a deployed process sees it."""
        variables = {
            "CLOUDJOBS_QUEUE_URL": self.queue.queue_url,
            "CLOUDJOBS_DLQ_URL": self.queue.dlq_url,
            "CLOUDJOBS_IDEMPOTENCY_TABLE": self.table,
        }
        if status_tracking:
            variables["CLOUDJOBS_STATUS_TRACKING"] = "true"
        if self.group is not None:
            variables.update(
                {f"CLOUDJOBS_{name.upper()}": value for name, value in self.eventbridge_environment().items()}
            )
        if self.bucket is not None:
            variables.update(
                {f"CLOUDJOBS_{name.upper()}": value for name, value in self.payload_environment().items()}
            )
        return variables

    def payload_environment(self) -> dict[str, str]:
        """The settings the module's ``environment`` output adds with ``payload_bucket``."""
        assert self.bucket is not None
        values = {"payload_bucket": self.bucket}
        if self.payload_delete:
            values["payload_delete"] = "true"
        return values

    def eventbridge_environment(self) -> dict[str, str]:
        """The settings the module's ``environment`` output adds with ``eventbridge_scheduler``."""
        assert self.group is not None
        return {
            "long_delays": "eventbridge",
            "schedules_mode": "eventbridge",
            "schedule_group": self.group,
            "scheduler_role_arn": self.scheduler_role_arn,
        }

    @property
    def scheduler_role_arn(self) -> str:
        """The role the module creates for the scheduler (its name: the queue's, then -scheduler)."""
        return f"arn:aws:iam::123456789012:role/{self.queue.name}-scheduler"

    def resource_of(self, call: Call, parameter: str) -> Resource:
        """The module's resource a call's ``parameter`` names; fails on anything the module lacks."""
        parameters = dict(call.parameters)
        value = parameters[parameter]
        if call.operation.startswith("s3."):
            assert parameters.get("Bucket") == self.bucket, f"{call.operation} outside the payload bucket"
            if call.operation == "s3.PutObject":
                assert value.startswith("cloudjobs/"), f"a body stored outside cloudjobs/: {value!r}"
                return Resource.PAYLOADS
            return Resource.ANY_PAYLOAD
        if call.operation.startswith("scheduler."):
            assert parameters.get("GroupName") == self.group, f"{call.operation} outside the app's group"
            if parameter == "RoleArn":
                assert value == self.scheduler_role_arn, f"{call.operation} passes role {value!r}"
                return Resource.SCHEDULER_ROLE
            return Resource.DELAY_SCHEDULES if value.startswith(DELAY_PREFIX) else Resource.SCHEDULES
        if parameter == "TableName":
            assert value == self.table, f"{call.operation} on table {value!r}, which the module lacks"
            index = parameters.get("IndexName")
            if index is None:
                return Resource.TABLE
            assert index == TABLE_JOB_ID_INDEX, f"{call.operation} on index {index!r}"
            return Resource.INDEX
        name = value.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        queues = {self.queue.name: Resource.QUEUE, self.queue.dlq_name: Resource.DLQ}
        assert name in queues, f"{call.operation} on queue {name!r}, which the module lacks"
        return queues[name]

    def grants_of(self, call: Call, *, has_kms_key: bool) -> set[Grant]:
        """The grants AWS checks for ``call`` (KMS ones only when a customer-managed key is used)."""
        assert call.operation in OPERATIONS, (
            f"{call.operation} is not in OPERATIONS: add its IAM action and resource there"
        )
        authorisation = OPERATIONS[call.operation]
        if authorisation.target is None:
            return {Grant(authorisation.action, Resource.ANY)}
        grants = {Grant(authorisation.action, self.resource_of(call, authorisation.target))}
        grants |= {Grant(action, self.resource_of(call, target)) for action, target in authorisation.also}
        if has_kms_key:
            grants |= {Grant(action, Resource.KEY) for action in authorisation.kms}
        return grants


# ---------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------

# The parameters that name a resource; the rest of a request does not matter to IAM.
_RESOURCE_PARAMETERS: Final = (
    "QueueUrl",
    "QueueName",
    "SourceArn",
    "DestinationArn",
    "TableName",
    "IndexName",
    "Name",
    "GroupName",
    "Bucket",
    "Key",
)
_MOVE_TASK_HANDLE: Final = "local-move-task"


def _answer_move_task(operation: str) -> Callable[..., Any]:
    """moto lacks move tasks (StartMessageMoveTask answers HTTP 500): answer them here, as AWS
    would for a task that moved everything, so the operator's move-task path runs to its end."""
    answers: dict[str, dict[str, Any]] = {
        "StartMessageMoveTask": {"TaskHandle": _MOVE_TASK_HANDLE},
        "ListMessageMoveTasks": {
            "Results": [
                {
                    "TaskHandle": _MOVE_TASK_HANDLE,
                    "Status": "COMPLETED",
                    "ApproximateNumberOfMessagesMoved": 0,
                    "ApproximateNumberOfMessagesToMove": 0,
                }
            ]
        },
    }

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("", 200, HTTPHeaders(), None), answers[operation]

    return answer


@contextlib.contextmanager
def recording(calls: list[Call]) -> Iterator[None]:
    """Record every API call of every botocore client created inside the block into ``calls``."""
    create_client = botocore.session.Session.create_client

    def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_id.hyphenize()
        named = tuple((key, str(params[key])) for key in _RESOURCE_PARAMETERS if key in params)
        # Batch reads name their tables as the keys of RequestItems.
        named += tuple(("TableName", str(table)) for table in params.get("RequestItems", {}))
        # A schedule's target names the role EventBridge Scheduler assumes (passed by the caller).
        target = params.get("Target")
        if isinstance(target, Mapping) and "RoleArn" in target:
            named += (("RoleArn", str(target["RoleArn"])),)
        calls.append(Call(f"{service}.{model.name}", named))

    def create_recorded_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, *args, **kwargs)
        client.meta.events.register("before-parameter-build", record)
        for operation in ("StartMessageMoveTask", "ListMessageMoveTasks"):
            client.meta.events.register(f"before-call.sqs.{operation}", _answer_move_task(operation))
        return client

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.session.Session, "create_client", create_recorded_client)
        yield


# ---------------------------------------------------------------------------------------------------
# Code paths by role
# ---------------------------------------------------------------------------------------------------

Record = Callable[[], contextlib.AbstractContextManager[None]]
"""Enter it around the role's own calls; setup and checks stay outside, unrecorded."""


@dataclass(frozen=True, slots=True)
class CodePath:
    """Code a role runs, and the module inputs it is deployed with."""

    role: str
    name: str
    run: Callable[[Stack, Record], None]
    status_tracking: bool = False
    unique_jobs: bool = False
    job_results: bool = False
    eventbridge_scheduler: bool = False
    payload_bucket: bool = False
    payload_delete: bool = False

    @property
    def inputs(self) -> dict[str, bool]:
        """The module's switches this code path is deployed with."""
        return {
            "status_tracking": self.status_tracking,
            "unique_jobs": self.unique_jobs,
            "job_results": self.job_results,
            "eventbridge_scheduler": self.eventbridge_scheduler,
            "payload_bucket": self.payload_bucket,
            "payload_delete": self.payload_delete,
        }


CODE_PATHS: list[CodePath] = []


def code_path(
    role: str,
    *,
    status_tracking: bool = False,
    unique_jobs: bool = False,
    job_results: bool = False,
    eventbridge_scheduler: bool = False,
    payload_bucket: bool = False,
    payload_delete: bool = False,
) -> Callable[[Callable[[Stack, Record], None]], None]:
    """Register a function as one of ``role``'s code paths."""

    def register(function: Callable[[Stack, Record], None]) -> None:
        name = function.__name__.removeprefix("_")
        CODE_PATHS.append(
            CodePath(
                role,
                name,
                function,
                status_tracking,
                unique_jobs,
                job_results,
                eventbridge_scheduler,
                payload_bucket,
                payload_delete,
            )
        )

    return register


class Order(BaseModel):
    order_id: str
    failures: int = 0


def _register_jobs(jobs: CloudJobs) -> None:
    """Jobs that take every branch a consumer has: done, retried, dead-lettered, idempotent,
    status-tracked with progress, and one that enqueues a follow-up."""

    @jobs.job("ship")
    def ship(payload: Order, job: Job) -> str:
        if job.attempt <= payload.failures:
            raise RetryableError("carrier busy", delay=timedelta(seconds=0))
        return payload.order_id

    @jobs.job("refuse")
    def refuse(payload: Order) -> None:
        raise PermanentError(f"order {payload.order_id} cannot be shipped")

    @jobs.job("charge", idempotent=True)
    def charge(payload: Order) -> str:
        return payload.order_id

    @jobs.job("report", track_status=True)
    def report(payload: Order, job: Job) -> str:
        job.progress(50)
        return payload.order_id

    @jobs.job("checkout")
    def checkout(payload: Order) -> None:
        ship.enqueue(Order(order_id=payload.order_id))
        report.enqueue(Order(order_id=payload.order_id))


_CONSUMED: Final = [
    ("ship", Order(order_id="o-1")),
    ("ship", Order(order_id="o-2", failures=1)),
    ("refuse", Order(order_id="o-3")),
    ("charge", Order(order_id="o-4")),
    ("report", Order(order_id="o-5")),
    ("checkout", Order(order_id="o-6")),
]


def _queue_counts(client: SQSClient, queue_url: str) -> int:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


@code_path("producer")
def _enqueue(stack: Stack, record: Record) -> None:
    by_url = CloudJobs(settings=stack.settings())
    by_name = CloudJobs(settings=stack.settings(queue_url=None, dlq_url=None, queue_name=stack.queue.name))
    for jobs in (by_url, by_name):
        _register_jobs(jobs)
    with record():
        by_url.enqueue("ship", Order(order_id="o-1"))
        by_url.enqueue_many([("ship", Order(order_id=f"o-{n}")) for n in range(12)])
        asyncio.run(by_url.enqueue_async("ship", Order(order_id="o-async")))
        by_name.enqueue("ship", Order(order_id="o-by-name"), delay=1)


@code_path("producer")
def _enqueue_to_a_named_queue(stack: Stack, record: Record) -> None:
    # A tier of several (the module called once per tier): the app knows this queue by the name in
    # CLOUDJOBS_QUEUES (the module's queues_entry gives its URL; its name works too).
    by_url = CloudJobs(
        settings=stack.settings(queue_url=None, dlq_url=None, queues={"bulk": stack.queue.queue_url})
    )
    by_name = CloudJobs(
        settings=stack.settings(queue_url=None, dlq_url=None, queues={"bulk": stack.queue.name})
    )
    for jobs in (by_url, by_name):
        _register_jobs(jobs)
    with record():
        by_url.enqueue("ship", Order(order_id="o-1"), queue="bulk", tenant="acme")
        by_url.enqueue_many([("ship", Order(order_id=f"o-{n}")) for n in range(3)], queue="bulk")
        by_name.enqueue("ship", Order(order_id="o-later"), queue="bulk", delay=timedelta(hours=1))


@code_path("producer", status_tracking=True)
def _enqueue_with_status_tracking_and_read_status(stack: Stack, record: Record) -> None:
    jobs = CloudJobs(settings=stack.settings(status_tracking=True))
    _register_jobs(jobs)
    with record():
        job_id = jobs.enqueue("report", Order(order_id="o-1"))
        status = jobs.status(job_id)  # the 202 example's GET /jobs/{id}
    assert status is not None
    assert status.state is JobState.PENDING


@code_path("producer", unique_jobs=True)
def _enqueue_unique_jobs(stack: Stack, record: Record) -> None:
    # A reservation (UpdateItem), its confirm; a repeat (a refused UpdateItem); with
    # unique_until="finished" the pending record (PutItem) and, on a repeat, the first job's record
    # (GetItem).
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    with record():
        first = jobs.enqueue("ship", Order(order_id="o-1"), unique_for=60, unique_key="o-1")
        repeat = jobs.enqueue("ship", Order(order_id="o-1"), unique_for=60, unique_key="o-1")
        until_finished = [
            jobs.enqueue("ship", Order(order_id="o-2"), unique_for=60, unique_until="finished")
            for _ in range(2)
        ]
    assert repeat == first
    assert until_finished[0] == until_finished[1]


@code_path("producer", job_results=True)
def _wait_for_results(stack: Stack, record: Record) -> None:
    # enqueue(track_status=True) writes the pending record (PutItem); result() polls it (GetItem);
    # another process finds it by job id (Query), and an id with no record also reads the alias and
    # the cancellation marker (GetItem) before it gives up.
    jobs = CloudJobs(settings=stack.settings())
    elsewhere = CloudJobs(settings=stack.settings())
    for app in (jobs, elsewhere):
        _register_jobs(app)
    with record():
        job_id = jobs.enqueue("ship", Order(order_id="o-1"), track_status=True)
        with pytest.raises(ResultTimeoutError):
            jobs.result(job_id, timeout=0.3)
        with pytest.raises(ResultTimeoutError):
            elsewhere.result(job_id, timeout=0.3)
        with pytest.raises(JobNotTrackedError):
            elsewhere.result(uuid.uuid4().hex, timeout=5)


@code_path("consumer", status_tracking=True)
def _worker(stack: Stack, record: Record) -> None:
    # Configured by the queue's name: the worker finds both URLs itself (the DLQ's from the redrive
    # policy). With status tracking on, the follow-up job a handler enqueues gets a pending record.
    jobs = CloudJobs(
        settings=stack.settings(
            queue_url=None, dlq_url=None, queue_name=stack.queue.name, status_tracking=True
        )
    )
    _register_jobs(jobs)
    _enqueue_unrecorded(stack)
    client: SQSClient = boto3.session.Session().client("sqs")
    try:
        with record(), running(jobs, concurrency=2, queue_metrics_interval=0.2):
            wait_for(lambda: _queue_counts(client, stack.queue.queue_url) == 0, message="the queue to empty")
        assert _queue_counts(client, stack.queue.dlq_url) == 1
    finally:
        client.close()


@code_path("consumer")
def _worker_on_a_named_queue(stack: Stack, record: Record) -> None:
    # A worker on tiers: this tier's queue known by its CLOUDJOBS_QUEUES name only, its DLQ found from
    # its redrive policy (CLOUDJOBS_DLQ_URL covers the default queue alone).
    jobs = CloudJobs(settings=stack.settings(queue_url=None, dlq_url=None, queues={"bulk": stack.queue.name}))
    _register_jobs(jobs)
    producer = CloudJobs(settings=stack.settings())
    _register_jobs(producer)
    producer.enqueue_many([(job_type, order) for job_type, order in _CONSUMED if job_type != "checkout"])
    client: SQSClient = boto3.session.Session().client("sqs")
    try:
        with record(), running(jobs, queues={"bulk": 1}, concurrency=2, queue_metrics_interval=0.2):
            wait_for(lambda: _queue_counts(client, stack.queue.queue_url) == 0, message="the queue to empty")
        assert _queue_counts(client, stack.queue.dlq_url) == 1
    finally:
        client.close()


@code_path("consumer")
def _lambda_function(stack: Stack, record: Record) -> None:
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    _enqueue_unrecorded(stack)
    with record():
        # The event source mapping polls with the function's role: its calls are the role's too.
        client: SQSClient = boto3.session.Session().client("sqs")
        handler = jobs.lambda_handler()
        try:
            EventSourceMapping(client, stack.queue, handler).run_until_empty()
        finally:
            handler.close()
            client.close()


@code_path("consumer")
def _lambda_function_with_no_queue_configured(stack: Stack, record: Record) -> None:
    # A function behind several event source mappings needs no queue setting: each record's queue,
    # its DLQ and redrive threshold come from its eventSourceARN (the queue's URL built from it).
    # Its handlers enqueue nothing here: sending needs the queue configured.
    jobs = CloudJobs(settings=stack.settings(queue_url=None, dlq_url=None))
    _register_jobs(jobs)
    producer = CloudJobs(settings=stack.settings())
    _register_jobs(producer)
    producer.enqueue_many([(job_type, order) for job_type, order in _CONSUMED if job_type != "checkout"])
    client: SQSClient = boto3.session.Session().client("sqs")
    try:
        with record():
            # The event source mapping polls with the function's role: its calls are the role's too.
            mapping_client: SQSClient = boto3.session.Session().client("sqs")
            handler = jobs.lambda_handler()
            try:
                EventSourceMapping(mapping_client, stack.queue, handler).run_until_empty()
            finally:
                handler.close()
                mapping_client.close()
        assert _queue_counts(client, stack.queue.dlq_url) == 1  # the refused order, in the ARN's queue's DLQ
    finally:
        client.close()


@code_path("consumer")
def _scheduler(stack: Stack, record: Record) -> None:
    # cloudjobs scheduler runs with the consumer's role, beside the workers: it claims ticks
    # (GetItem, UpdateItem), writes a fired job's pending record (PutItem), sends it, and with
    # overlap="skip" reads the previous run's status (a Query on the index).
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    jobs.schedule("reports", every=60, job_type="report", payload=Order(order_id="o-1"), overlap="skip")
    scheduler = jobs.scheduler()
    now = datetime.now(UTC)
    with record():
        first = scheduler.run_pending(now)
        second = scheduler.run_pending(now + timedelta(seconds=60))
    assert len(first.fired) == 1
    assert len(second.skipped_overlap) == 1


def _enqueue_unrecorded(stack: Stack) -> list[str]:
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    return jobs.enqueue_many(_CONSUMED)


@code_path("operator")
def _command_line(stack: Stack, record: Record) -> None:
    # Three dead letters of two types, and a job with a status record to cancel.
    setup = CloudJobs(settings=stack.settings(status_tracking=True))
    _register_jobs(setup)
    to_cancel = setup.enqueue("report", Order(order_id="o-cancel"))
    dead = CloudJobs(settings=stack.settings(queue_url=stack.queue.dlq_url, dlq_url=None))
    _register_jobs(dead)
    dead.enqueue_many([("ship", Order(order_id="o-1")), ("refuse", Order(order_id="o-2"))] * 2)

    commands: list[tuple[list[str], int]] = [
        (["stats"], EXIT_FAILED),  # unhealthy: the DLQ holds messages
        (["stats", "--age"], EXIT_FAILED),
        (["dlq", "list"], EXIT_OK),
        (["dlq", "redrive", "--type", "ship"], EXIT_OK),  # message by message
        (["dlq", "redrive"], EXIT_OK),  # one move task
        (["dlq", "purge", "--type", "refuse", "--yes"], EXIT_OK),  # message by message
        (["dlq", "purge", "--yes"], EXIT_OK),  # PurgeQueue
        (["enqueue", "ship", '{"order_id": "o-7"}', "--unique-for", "60", "--unique-key", "o-7"], EXIT_OK),
        (["enqueue", "ship", '{"order_id": "o-8"}', "--track-status"], EXIT_OK),
        (["cancel", to_cancel], EXIT_OK),  # through its record
        (["cancel", uuid.uuid4().hex], EXIT_OK),  # no record: a marker
    ]
    with record(), pytest.MonkeyPatch.context() as patch:
        for name, value in stack.environment_output().items():
            patch.setenv(name, value)
        codes = [cli_main(arguments) for arguments, _ in commands]
    assert codes == [code for _, code in commands]


@code_path("operator")
def _command_line_on_a_named_queue(stack: Stack, record: Record) -> None:
    # The tier's queue by its CLOUDJOBS_QUEUES name: every command takes --queue.
    dead = CloudJobs(settings=stack.settings(queue_url=stack.queue.dlq_url, dlq_url=None))
    _register_jobs(dead)
    dead.enqueue_many([("ship", Order(order_id="o-1")), ("refuse", Order(order_id="o-2"))])
    commands: list[tuple[list[str], int]] = [
        (["stats", "--queue", "bulk"], EXIT_FAILED),  # unhealthy: the DLQ holds messages
        (["stats", "--all-queues"], EXIT_FAILED),
        (["dlq", "list", "--queue", "bulk"], EXIT_OK),
        (["dlq", "redrive", "--type", "ship", "--queue", "bulk"], EXIT_OK),
        (["dlq", "purge", "--yes", "--queue", "bulk"], EXIT_OK),
        (["enqueue", "ship", '{"order_id": "o-3"}', "--queue", "bulk", "--tenant", "acme"], EXIT_OK),
    ]
    with record(), pytest.MonkeyPatch.context() as patch:
        patch.delenv("CLOUDJOBS_QUEUE_URL", raising=False)
        patch.delenv("CLOUDJOBS_DLQ_URL", raising=False)
        patch.setenv("CLOUDJOBS_QUEUES", f"bulk={stack.queue.queue_url}")
        patch.setenv("CLOUDJOBS_IDEMPOTENCY_TABLE", stack.table)
        codes = [cli_main(arguments) for arguments, _ in commands]
    assert codes == [code for _, code in commands]


@code_path("operator")
def _command_line_by_queue_name(stack: Stack, record: Record) -> None:
    # CLOUDJOBS_QUEUE_NAME instead of the URLs: both are looked up (the DLQ's from the redrive policy).
    with record(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLOUDJOBS_QUEUE_NAME", stack.queue.name)
        patch.setenv("CLOUDJOBS_IDEMPOTENCY_TABLE", stack.table)
        codes = [cli_main(["stats"]), cli_main(["dlq", "list"])]
    assert codes == [EXIT_OK, EXIT_OK]


@code_path("producer", eventbridge_scheduler=True)
def _enqueue_long_delays_as_schedules(stack: Stack, record: Record) -> None:
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    with record():
        jobs.enqueue("ship", Order(order_id="o-1"), delay=timedelta(days=2))
        jobs.enqueue_many([("ship", Order(order_id="o-2"))], delay=timedelta(hours=1))


@code_path("consumer", eventbridge_scheduler=True)
def _worker_enqueueing_and_cancelling_delayed_jobs(stack: Stack, record: Record) -> None:
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    follow_ups: list[str] = []

    @jobs.job("remind-later")
    def remind_later(payload: Order) -> None:
        follow_ups.append(jobs.enqueue("ship", payload, delay=timedelta(days=1)))

    producer = CloudJobs(settings=stack.settings(long_delays="hops"))
    producer.enqueue("remind-later", Order(order_id="o-1"))
    client: SQSClient = boto3.session.Session().client("sqs")
    try:
        with record():
            with running(jobs, concurrency=1, queue_metrics_interval=0.2):
                wait_for(lambda: _queue_counts(client, stack.queue.queue_url) == 0 and bool(follow_ups))
            assert jobs.cancel(follow_ups[0]).schedule_deleted
    finally:
        client.close()


@code_path("operator", eventbridge_scheduler=True)
def _cancel_a_delayed_job_and_sync_schedules(stack: Stack, record: Record) -> None:
    producer = CloudJobs(settings=stack.settings())
    _register_jobs(producer)
    job_id = producer.enqueue("ship", Order(order_id="o-1"), delay=timedelta(days=2))
    before, after = CloudJobs(settings=stack.settings()), CloudJobs(settings=stack.settings())
    for jobs in (before, after):
        _register_jobs(jobs)
    before.schedule("nightly", job_type="ship", payload={"order_id": "n"}, cron="0 2 * * *")
    before.schedule("hourly", job_type="ship", payload={"order_id": "h"}, every=3600)
    after.schedule("nightly", job_type="ship", payload={"order_id": "n"}, cron="0 3 * * *")
    with record(), pytest.MonkeyPatch.context() as patch:
        for name, value in stack.environment_output().items():
            patch.setenv(name, value)
        assert cli_main(["cancel", job_id]) == EXIT_OK
        # cloudjobs schedules sync, twice: creating both, then updating one and deleting the other.
        for jobs in (before, after):
            group = jobs.eventbridge_schedules
            apply_sync(plan_sync(wanted_schedules(jobs, group.role_arn), group), group)


@code_path("scheduler", eventbridge_scheduler=True)
def _scheduler_sends_a_due_job(stack: Stack, record: Record) -> None:
    # EventBridge Scheduler, assuming the module's role, calls SendMessage with the stored input.
    jobs = CloudJobs(settings=stack.settings())
    _register_jobs(jobs)
    job_id = jobs.enqueue("ship", Order(order_id="o-1"), delay=timedelta(days=2))
    schedules: EventBridgeSchedulerClient = boto3.session.Session().client("scheduler")
    try:
        stored = schedules.get_schedule(Name=f"{DELAY_PREFIX}{job_id}", GroupName=stack.group or "")
    finally:
        schedules.close()
    with record():
        client: SQSClient = boto3.session.Session().client("sqs")
        try:
            client.send_message(**json.loads(stored["Target"]["Input"]))
        finally:
            client.close()


_LARGE: Final = "x" * (300 * 1024)  # past a 256 KiB threshold: stored in the payload bucket


@code_path("producer", payload_bucket=True)
def _enqueue_large_payloads(stack: Stack, record: Record) -> None:
    jobs = CloudJobs(settings=stack.settings(payload_threshold_bytes=256 * 1024))
    _register_jobs(jobs)
    with record():
        jobs.enqueue("ship", Order(order_id=_LARGE))
        jobs.enqueue_many([("ship", Order(order_id=_LARGE)), ("ship", Order(order_id="small"))])


@code_path("consumer", payload_bucket=True, payload_delete=True)
def _worker_reading_and_deleting_large_payloads(stack: Stack, record: Record) -> None:
    jobs = CloudJobs(settings=stack.settings(payload_threshold_bytes=256 * 1024))
    _register_jobs(jobs)
    done: list[str] = []

    @jobs.job("fan-out")
    def fan_out(payload: Order) -> None:
        jobs.enqueue("ship", payload)  # a follow-up too large for the queue: stored as well
        done.append(payload.order_id)

    producer = CloudJobs(settings=stack.settings(payload_threshold_bytes=256 * 1024))
    producer.enqueue("fan-out", Order(order_id=_LARGE))
    client: SQSClient = boto3.session.Session().client("sqs")
    try:
        with record(), running(jobs, concurrency=1, queue_metrics_interval=0.2):
            wait_for(lambda: bool(done) and _queue_counts(client, stack.queue.queue_url) == 0)
    finally:
        client.close()


@code_path("operator", payload_bucket=True)
def _purge_dead_letters_with_stored_bodies(stack: Stack, record: Record) -> None:
    # A pointer message in the dead-letter queue, as a consumer's dead-lettering leaves it.
    into_dlq = CloudJobs(
        settings=stack.settings(
            queue_url=stack.queue.dlq_url, dlq_url=None, payload_threshold_bytes=256 * 1024
        )
    )
    into_dlq.enqueue("ship", Order(order_id=_LARGE))
    with record(), pytest.MonkeyPatch.context() as patch:
        for name, value in stack.environment_output().items():
            patch.setenv(name, value)
        assert cli_main(["dlq", "purge", "--yes"]) == EXIT_OK


def test_every_role_that_creates_schedules_may_pass_only_the_schedulers_role(module: Configuration) -> None:
    # iam:PassRole is checked by IAM, not by the scheduler's API: grant it on the one role, to the one
    # service, and to every role whose code creates or updates schedules.
    for role in ("producer", "consumer", "operator"):
        passing = [
            statement
            for statement in statements(module.data[f"aws_iam_policy_document.{role}"])
            if "iam:PassRole" in statement.actions
        ]
        assert len(passing) == 1, role
        assert passing[0].resources == (Resource.SCHEDULER_ROLE.value,)
        assert passing[0].for_each == "${var.eventbridge_scheduler ? [true] : []}"
        block = json.dumps(passing[0].block)
        assert '"iam:PassedToService"' in block
        assert '"scheduler.amazonaws.com"' in block


# ---------------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModuleInputs:
    """The module's variables that switch statements on or off."""

    status_tracking: bool
    has_kms_key: bool
    unique_jobs: bool = False
    job_results: bool = False
    eventbridge_scheduler: bool = False
    payload_bucket: bool = False
    payload_delete: bool = False


# The dynamic statements' for_each expressions, each with when it generates its statement. An
# expression missing here fails the test: teach it the new condition.
_CONDITIONS: Final[Mapping[str, Callable[[ModuleInputs], bool]]] = {
    "${var.status_tracking ? [true] : []}": lambda inputs: inputs.status_tracking,
    "${var.unique_jobs ? [true] : []}": lambda inputs: inputs.unique_jobs,
    "${var.job_results ? [true] : []}": lambda inputs: inputs.job_results,
    "${local.uses_sqs_managed_sse ? [] : [true]}": lambda inputs: inputs.has_kms_key,
    "${var.eventbridge_scheduler ? [true] : []}": lambda inputs: inputs.eventbridge_scheduler,
    "${var.payload_bucket ? [true] : []}": lambda inputs: inputs.payload_bucket,
    "${var.payload_bucket && var.payload_delete ? [true] : []}": lambda inputs: (
        inputs.payload_bucket and inputs.payload_delete
    ),
    # The app's other tiers' queues: not provisioned here (tests/infra checks that statement).
    "${length(var.scheduler_queue_arns) > 0 ? [true] : []}": lambda inputs: False,
}


def granted(module: Configuration, role: str, inputs: ModuleInputs) -> set[Grant]:
    """What ``role``'s policy document allows when the module is called with ``inputs``."""
    grants: set[Grant] = set()
    for statement in statements(module.data[f"aws_iam_policy_document.{role}"]):
        assert statement.effect == "Allow", statement.sid
        if statement.for_each is not None:
            assert statement.for_each in _CONDITIONS, (
                f"{statement.sid}: unknown for_each {statement.for_each}"
            )
            if not _CONDITIONS[statement.for_each](inputs):
                continue
        grants |= {
            Grant(action, Resource(resource))
            for action in statement.actions
            for resource in statement.resources
        }
    return grants


@dataclass
class Recordings:
    """Each code path run once on a fresh stack, its calls recorded (computed on first use)."""

    environment: Mapping[str, str]
    _done: dict[str, tuple[Stack, list[Call]]] = field(default_factory=dict)

    def of(self, path: CodePath) -> tuple[Stack, list[Call]]:
        """The stack ``path`` ran on and the calls it made."""
        if path.name not in self._done:
            self._done[path.name] = self._run(path)
        return self._done[path.name]

    def _run(self, path: CodePath) -> tuple[Stack, list[Call]]:
        sqs: SQSClient = boto3.session.Session().client("sqs")
        dynamodb: DynamoDBClient = boto3.session.Session().client("dynamodb")
        spec = QueueSpec(f"iam-{uuid.uuid4().hex[:12]}", visibility_timeout_seconds=5, max_receive_count=5)
        table = TableSpec(f"{spec.name}-idempotency")
        scheduler: EventBridgeSchedulerClient = boto3.session.Session().client("scheduler")
        group = spec.name if path.eventbridge_scheduler else None  # the module names it after the queue
        bucket = f"{spec.name}-payloads" if path.payload_bucket else None  # the module's default name
        s3: S3Client = boto3.session.Session().client("s3")
        calls: list[Call] = []
        try:
            stack = Stack(
                provision_queue(spec, client=sqs),
                table.name,
                self.environment,
                group,
                bucket,
                path.payload_delete,
            )
            provision_table(table, client=dynamodb)
            if group is not None:
                scheduler.create_schedule_group(Name=group)
            if bucket is not None:
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            path.run(stack, lambda: recording(calls))
            return stack, calls
        finally:
            if group is not None:
                scheduler.delete_schedule_group(Name=group)
            if bucket is not None:
                for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
                    s3.delete_object(Bucket=bucket, Key=item["Key"])
                s3.delete_bucket(Bucket=bucket)
            s3.close()
            delete_queue(spec, client=sqs)
            delete_table(table, client=dynamodb)
            sqs.close()
            dynamodb.close()
            scheduler.close()


@pytest.fixture(scope="module")
def module() -> Configuration:
    return parse(MODULE)


@pytest.fixture(scope="module")
def recordings(aws_server: LocalAwsServer) -> Iterator[Recordings]:
    """Code paths run against the session's moto server, with its environment for the module."""
    environment = local_environment(aws_server.endpoint_url)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"):
            patch.delenv(name, raising=False)
        for name, value in environment.items():
            patch.setenv(name, value)
        # Operator commands set a retry policy in the environment when none is set: keep it to this block.
        patch.setenv("AWS_RETRY_MODE", "standard")
        patch.setenv("AWS_MAX_ATTEMPTS", "2")
        for name in (
            "CLOUDJOBS_QUEUE_URL",
            "CLOUDJOBS_QUEUE_NAME",
            "CLOUDJOBS_DLQ_URL",
            "CLOUDJOBS_IDEMPOTENCY_TABLE",
        ):
            patch.delenv(name, raising=False)
        yield Recordings(environment)


def _required(stack: Stack, calls: list[Call], *, has_kms_key: bool) -> set[Grant]:
    return set().union(*(stack.grants_of(call, has_kms_key=has_kms_key) for call in calls))


@pytest.mark.parametrize("has_kms_key", [False, True], ids=["sqs-managed-keys", "kms-key"])
@pytest.mark.parametrize("path", CODE_PATHS, ids=lambda path: f"{path.role}-{path.name}")
def test_each_call_a_role_makes_is_granted_by_its_policy(
    module: Configuration, recordings: Recordings, path: CodePath, has_kms_key: bool
) -> None:
    stack, calls = recordings.of(path)
    assert calls, f"{path.name} made no AWS call: the recording is not working"
    required = _required(stack, calls, has_kms_key=has_kms_key)
    allowed = granted(module, path.role, ModuleInputs(has_kms_key=has_kms_key, **path.inputs))
    missing = sorted(required - allowed)
    assert not missing, f"the {path.role} policy lacks: " + ", ".join(map(str, missing))


@pytest.mark.parametrize("role", sorted(GRANTED_BUT_UNUSED))
def test_every_grant_is_used_or_listed_for_review(
    module: Configuration, recordings: Recordings, role: str
) -> None:
    paths = [path for path in CODE_PATHS if path.role == role]
    assert paths, f"no code path exercises the {role} role"
    used: set[Grant] = set()
    for path in paths:
        stack, calls = recordings.of(path)
        used |= _required(stack, calls, has_kms_key=True)
    everything = granted(
        module,
        role,
        ModuleInputs(
            status_tracking=True,
            has_kms_key=True,
            unique_jobs=True,
            job_results=True,
            eventbridge_scheduler=True,
            payload_bucket=True,
            payload_delete=True,
        ),
    )
    assert everything - used == GRANTED_BUT_UNUSED[role], "granted but never used: " + ", ".join(
        map(str, sorted(everything - used))
    )
