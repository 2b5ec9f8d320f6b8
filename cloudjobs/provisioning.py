"""One description of the AWS resources cloudjobs needs, applied the same way everywhere.

The CLI, the local stack and the tests create queues from a :class:`QueueSpec` (and the idempotency
table from a :class:`TableSpec`); the Terraform module
uses the same defaults (the ``DEFAULT_*`` constants) and the same names: a queue ``<name>`` has its
dead-letter queue ``<name>-dlq`` (``<name>-dlq.fifo`` for FIFO queues).

boto3 is imported only by the functions that apply a spec, so validating one needs no AWS code.
Ranges: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

# SQS's limits are defined beside the Backend protocol; re-exported (the "as" form) for the tests, the
# Terraform parity checks and users who import them from here.
from cloudjobs.backends.base import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE
from cloudjobs.backends.base import MAX_DELAY_SECONDS as MAX_DELAY_SECONDS
from cloudjobs.backends.base import MAX_MAX_RECEIVE_COUNT as MAX_MAX_RECEIVE_COUNT
from cloudjobs.backends.base import MAX_QUEUE_NAME_LENGTH as MAX_QUEUE_NAME_LENGTH
from cloudjobs.backends.base import MAX_RETENTION_SECONDS as MAX_RETENTION_SECONDS
from cloudjobs.backends.base import MAX_VISIBILITY_TIMEOUT_SECONDS as MAX_VISIBILITY_TIMEOUT_SECONDS
from cloudjobs.backends.base import MIN_MAX_MESSAGE_SIZE as MIN_MAX_MESSAGE_SIZE
from cloudjobs.backends.base import MIN_RETENTION_SECONDS as MIN_RETENTION_SECONDS
from cloudjobs.errors import ConfigurationError

# The table's schema is the store's (cloudjobs.idempotency.dynamodb_schema); re-exported (the "as"
# form) for the CLI, the tests and users who import it from here.
from cloudjobs.idempotency.dynamodb_schema import TABLE_JOB_ID_ATTRIBUTE as TABLE_JOB_ID_ATTRIBUTE
from cloudjobs.idempotency.dynamodb_schema import TABLE_JOB_ID_INDEX as TABLE_JOB_ID_INDEX
from cloudjobs.idempotency.dynamodb_schema import TABLE_PARTITION_KEY as TABLE_PARTITION_KEY
from cloudjobs.idempotency.dynamodb_schema import TABLE_TTL_ATTRIBUTE as TABLE_TTL_ATTRIBUTE
from cloudjobs.idempotency.dynamodb_schema import create_table_request

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

DEFAULT_VISIBILITY_TIMEOUT_SECONDS: Final = 30
"""SQS's default visibility timeout for new queues."""
DEFAULT_MAX_RECEIVE_COUNT: Final = 5
"""Receives after which SQS moves a message to the dead-letter queue."""
DEFAULT_MESSAGE_RETENTION_SECONDS: Final = 345_600
"""SQS's default retention: 4 days."""
DEFAULT_DLQ_RETENTION_SECONDS: Final = MAX_RETENTION_SECONDS
"""The dead-letter queue keeps messages for the longest SQS allows: 14 days."""
DEFAULT_DELAY_SECONDS: Final = 0
"""No queue-level delay."""
DLQ_SUFFIX: Final = "-dlq"
"""Appended to a queue's name (before ``.fifo``) to name its dead-letter queue."""
FIFO_SUFFIX: Final = ".fifo"
"""SQS requires FIFO queue names to end with this."""

_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]+")
_TABLE_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_ALREADY_EXISTS_CODES: Final = frozenset({"QueueAlreadyExists", "QueueNameExists"})


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue and its dead-letter queue, as cloudjobs provisions them.

    Attributes:
        name: the queue's name; a FIFO queue's name ends with ``.fifo``.
        fifo: a FIFO queue (its dead-letter queue is FIFO too).
        visibility_timeout_seconds: the default visibility timeout, 0–43,200 s.
        max_receive_count: receives after which a message moves to the DLQ, 1–1,000.
        message_retention_seconds: how long the queue keeps a message, 60 s – 14 days.
        dlq_retention_seconds: how long the DLQ keeps a message; longer than the queue's, as a
            standard message keeps its original enqueue time when it moves.
        max_message_size: the largest message in bytes, 1,024 – 1,048,576.
        delay_seconds: the queue-level delay, 0–900 s.
        content_based_deduplication: deduplicate FIFO messages on a hash of their body.

    Raises:
        ConfigurationError: a value is outside what SQS accepts (``setting`` names the field).
    """

    name: str
    fifo: bool = False
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT
    message_retention_seconds: int = DEFAULT_MESSAGE_RETENTION_SECONDS
    dlq_retention_seconds: int = DEFAULT_DLQ_RETENTION_SECONDS
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    delay_seconds: int = DEFAULT_DELAY_SECONDS
    content_based_deduplication: bool = False

    def __post_init__(self) -> None:
        self._check_name()
        _check_range(
            "visibility_timeout_seconds", self.visibility_timeout_seconds, 0, MAX_VISIBILITY_TIMEOUT_SECONDS
        )
        _check_range("max_receive_count", self.max_receive_count, 1, MAX_MAX_RECEIVE_COUNT)
        _check_range(
            "message_retention_seconds",
            self.message_retention_seconds,
            MIN_RETENTION_SECONDS,
            MAX_RETENTION_SECONDS,
        )
        _check_range(
            "dlq_retention_seconds", self.dlq_retention_seconds, MIN_RETENTION_SECONDS, MAX_RETENTION_SECONDS
        )
        if self.message_retention_seconds >= self.dlq_retention_seconds:
            raise ConfigurationError(
                f"the dead-letter queue's retention ({self.dlq_retention_seconds} s) must be longer than the "
                f"queue's ({self.message_retention_seconds} s): a moved message keeps its enqueue time",
                setting="dlq_retention_seconds",
            )
        _check_range(
            "max_message_size", self.max_message_size, MIN_MAX_MESSAGE_SIZE, DEFAULT_MAX_MESSAGE_SIZE
        )
        _check_range("delay_seconds", self.delay_seconds, 0, MAX_DELAY_SECONDS)
        if self.content_based_deduplication and not self.fifo:
            raise ConfigurationError("only FIFO queues deduplicate", setting="content_based_deduplication")

    @property
    def dlq_name(self) -> str:
        """The dead-letter queue's name: ``<name>-dlq``, or ``<name>-dlq.fifo`` for FIFO queues."""
        base = self.name.removesuffix(FIFO_SUFFIX) if self.fifo else self.name
        return base + DLQ_SUFFIX + (FIFO_SUFFIX if self.fifo else "")

    def queue_attributes(self, *, dlq_arn: str) -> dict[QueueAttributeNameType, str]:
        """The queue's SQS attributes, with a redrive policy to the dead-letter queue at ``dlq_arn``."""
        redrive_policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.max_receive_count}
        return {
            **self._common_attributes(),
            "MessageRetentionPeriod": str(self.message_retention_seconds),
            "DelaySeconds": str(self.delay_seconds),
            "RedrivePolicy": json.dumps(redrive_policy),
        }

    def dlq_attributes(self) -> dict[QueueAttributeNameType, str]:
        """The dead-letter queue's SQS attributes at creation (its redrive-allow policy comes later)."""
        return {**self._common_attributes(), "MessageRetentionPeriod": str(self.dlq_retention_seconds)}

    def _common_attributes(self) -> dict[QueueAttributeNameType, str]:
        attributes: dict[QueueAttributeNameType, str] = {
            "VisibilityTimeout": str(self.visibility_timeout_seconds),
            "MaximumMessageSize": str(self.max_message_size),
        }
        if self.fifo:
            # FifoQueue can only be given at creation, and only as "true".
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = str(self.content_based_deduplication).lower()
        return attributes

    def _check_name(self) -> None:
        base = self.name.removesuffix(FIFO_SUFFIX)
        if not _NAME_PATTERN.fullmatch(base):
            raise ConfigurationError(
                f"queue name {self.name!r} may hold only letters, digits, hyphens and underscores",
                setting="name",
            )
        if self.fifo != self.name.endswith(FIFO_SUFFIX):
            raise ConfigurationError(
                f"queue name {self.name!r}: a name ends with {FIFO_SUFFIX!r} exactly when the queue is FIFO",
                setting="name",
            )
        if len(self.dlq_name) > MAX_QUEUE_NAME_LENGTH:
            raise ConfigurationError(
                f"queue name {self.name!r} is too long: its dead-letter queue's name {self.dlq_name!r} "
                f"must fit in {MAX_QUEUE_NAME_LENGTH} characters",
                setting="name",
            )


@dataclass(frozen=True, slots=True)
class ProvisionedQueue:
    """A queue and its dead-letter queue as they exist after :func:`provision_queue`.

    Attributes:
        queue_url: the queue's URL.
        dlq_url: the dead-letter queue's URL.
        queue_arn: the queue's ARN.
        dlq_arn: the dead-letter queue's ARN.
    """

    queue_url: str
    dlq_url: str
    queue_arn: str
    dlq_arn: str

    @property
    def name(self) -> str:
        """The queue's name (the last component of its ARN)."""
        return self.queue_arn.rsplit(":", 1)[-1]

    @property
    def dlq_name(self) -> str:
        """The dead-letter queue's name (the last component of its ARN)."""
        return self.dlq_arn.rsplit(":", 1)[-1]


def provision_queue(spec: QueueSpec, *, client: SQSClient) -> ProvisionedQueue:
    """Create (or bring up to date) the queue and its dead-letter queue described by ``spec``.

    The dead-letter queue comes first, then the queue with a redrive policy to it, then the DLQ's
    redrive-allow policy naming the queue as its only source. Safe to run again: an existing queue
    gets the spec's attributes (except ``FifoQueue``, which SQS fixes at creation).

    Args:
        spec: what to create.
        client: the SQS client to create it with (its endpoint and credentials are used as they are).

    Returns:
        The URLs and ARNs of both queues.

    Raises:
        BackendError: SQS refused a request (``CredentialsError``, ``BackendUnavailableError`` and
            the rest of the tree, as :class:`~cloudjobs.backends.sqs.SqsBackend` raises them).
    """
    from cloudjobs.backends.sqs import wrap_aws_errors

    with wrap_aws_errors(spec.dlq_name):
        dlq_url = _create_or_update(client, spec.dlq_name, spec.dlq_attributes())
        dlq_arn = _queue_arn(client, dlq_url)
    with wrap_aws_errors(spec.name):
        queue_url = _create_or_update(client, spec.name, spec.queue_attributes(dlq_arn=dlq_arn))
        queue_arn = _queue_arn(client, queue_url)
    redrive_allow_policy = {"redrivePermission": "byQueue", "sourceQueueArns": [queue_arn]}
    with wrap_aws_errors(spec.dlq_name):
        client.set_queue_attributes(
            QueueUrl=dlq_url, Attributes={"RedriveAllowPolicy": json.dumps(redrive_allow_policy)}
        )
    return ProvisionedQueue(queue_url=queue_url, dlq_url=dlq_url, queue_arn=queue_arn, dlq_arn=dlq_arn)


def delete_queue(spec: QueueSpec, *, client: SQSClient) -> None:
    """Delete the queue described by ``spec`` and its dead-letter queue; missing ones are skipped.

    SQS may take up to 60 s to finish a deletion, and a queue of the same name cannot be created
    again within that time.

    Raises:
        BackendError: SQS refused a request for another reason than the queue being missing.
    """
    from cloudjobs.backends.sqs import wrap_aws_errors
    from cloudjobs.errors import QueueNotFoundError

    # The queue first: its redrive policy points at the dead-letter queue.
    for name in (spec.name, spec.dlq_name):
        try:
            with wrap_aws_errors(name):
                client.delete_queue(QueueUrl=client.get_queue_url(QueueName=name)["QueueUrl"])
        except QueueNotFoundError:
            continue


def _create_or_update(client: SQSClient, name: str, attributes: dict[QueueAttributeNameType, str]) -> str:
    import botocore.exceptions

    try:
        return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in _ALREADY_EXISTS_CODES:
            raise
    # The queue exists with other attributes: apply the spec's (FifoQueue is fixed at creation).
    queue_url = client.get_queue_url(QueueName=name)["QueueUrl"]
    changeable: dict[QueueAttributeNameType, str] = {
        key: value for key, value in attributes.items() if key != "FifoQueue"
    }
    client.set_queue_attributes(QueueUrl=queue_url, Attributes=changeable)
    return queue_url


def _queue_arn(client: SQSClient, queue_url: str) -> str:
    return client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


def _check_range(setting: str, value: int, lowest: int, highest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise ConfigurationError(f"{value!r} is outside {lowest}–{highest}", setting=setting)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """The idempotency and status table, as cloudjobs provisions it (and the Terraform module does).

    On-demand capacity; partition key :data:`TABLE_PARTITION_KEY` (S); a global secondary index
    :data:`TABLE_JOB_ID_INDEX` on :data:`TABLE_JOB_ID_ATTRIBUTE` (S) projecting every attribute;
    TTL on :data:`TABLE_TTL_ATTRIBUTE`. The schema is the store's, in
    :mod:`cloudjobs.idempotency.dynamodb_schema`.

    Attributes:
        name: the table's name (``CLOUDJOBS_IDEMPOTENCY_TABLE``), 3–255 of ``A-Z a-z 0-9 _ - .``.

    Raises:
        ConfigurationError: the name is not a valid DynamoDB table name.
    """

    name: str

    def __post_init__(self) -> None:
        if not _TABLE_NAME_PATTERN.fullmatch(self.name):
            raise ConfigurationError(
                f"table name {self.name!r} must be 3–255 letters, digits, '_', '-' or '.'", setting="name"
            )


def provision_table(spec: TableSpec, *, client: DynamoDBClient) -> str:
    """Create the table described by ``spec`` (if missing), wait until it is active, and turn TTL on.

    Safe to run again: an existing table is left as it is, apart from TTL being turned on.

    Returns:
        The table's ARN.

    Raises:
        IdempotencyStoreError: DynamoDB refused a request (``code`` names the error).
    """
    import botocore.exceptions

    from cloudjobs.errors import IdempotencyStoreError

    try:
        try:
            client.create_table(**create_table_request(spec.name))
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
        client.get_waiter("table_exists").wait(
            TableName=spec.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        ttl = client.describe_time_to_live(TableName=spec.name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            client.update_time_to_live(
                TableName=spec.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TABLE_TTL_ATTRIBUTE},
            )
        return client.describe_table(TableName=spec.name)["Table"]["TableArn"]
    except (botocore.exceptions.ClientError, botocore.exceptions.WaiterError) as exc:
        code = (
            exc.response.get("Error", {}).get("Code")
            if isinstance(exc, botocore.exceptions.ClientError)
            else None
        )
        raise IdempotencyStoreError(
            f"provisioning table {spec.name!r} failed: {exc}", table=spec.name, code=code
        ) from exc


def delete_table(spec: TableSpec, *, client: DynamoDBClient) -> None:
    """Delete the table described by ``spec``; a missing table is skipped.

    Raises:
        IdempotencyStoreError: DynamoDB refused the request for another reason.
    """
    import botocore.exceptions

    from cloudjobs.errors import IdempotencyStoreError

    try:
        client.delete_table(TableName=spec.name)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code != "ResourceNotFoundException":
            raise IdempotencyStoreError(str(exc), table=spec.name, code=code) from exc
