"""The queue backend and the idempotency store CloudJobs builds from Settings when none is given.

The AWS modules are imported inside the functions, so importing this one loads no boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudjobs.backends.base import Backend
from cloudjobs.errors import ConfigurationError
from cloudjobs.queues import QueueArn
from cloudjobs.settings import SettingsModel

if TYPE_CHECKING:
    from botocore.config import Config

    from cloudjobs.backends.sqs import SqsBackend
    from cloudjobs.idempotency.base import IdempotencyStore
    from cloudjobs.scheduling.eventbridge import EventBridgeSchedules


def build_sqs_backend(settings: SettingsModel) -> Backend:
    """An :class:`~cloudjobs.backends.sqs.SqsBackend` on the settings' queue (no I/O).

    Raises:
        ConfigurationError: neither ``CLOUDJOBS_QUEUE_URL`` nor ``CLOUDJOBS_QUEUE_NAME`` is set.
    """
    if not settings.queue_url and not settings.queue_name:
        raise ConfigurationError(
            "no queue configured: set CLOUDJOBS_QUEUE_URL or CLOUDJOBS_QUEUE_NAME",
            setting="CLOUDJOBS_QUEUE_URL",
        )
    from cloudjobs.backends.sqs import SqsBackend

    return SqsBackend(
        queue_url=settings.queue_url,
        queue_name=settings.queue_name,
        dlq_url=settings.dlq_url,
        region=settings.region,
        max_pool_connections=max(10, settings.concurrency + 4),
        wait_time_seconds=settings.wait_time_seconds,
    )


def build_named_sqs_backend(settings: SettingsModel, value: str, *, config: Config | None = None) -> Backend:
    """An :class:`~cloudjobs.backends.sqs.SqsBackend` on a named queue of ``CLOUDJOBS_QUEUES``: a
    URL or a queue name (no I/O). Its dead-letter queue comes from its own redrive policy.
    ``config`` is extra botocore configuration (the command line's connect timeout)."""
    from cloudjobs.backends.sqs import SqsBackend
    from cloudjobs.queues import is_queue_url

    return SqsBackend(
        queue_url=value if is_queue_url(value) else None,
        queue_name=None if is_queue_url(value) else value,
        region=settings.region,
        max_pool_connections=max(10, settings.concurrency + 4),
        wait_time_seconds=settings.wait_time_seconds,
        config=config,
    )


def build_event_source_backend(settings: SettingsModel, queue: QueueArn) -> SqsBackend:
    """An :class:`~cloudjobs.backends.sqs.SqsBackend` on the queue an ARN names: a Lambda event
    source that is none of the app's configured queues (no I/O).

    Its URL is built from the ARN (looked up by name with GetQueueUrl in a partition whose URL form
    is not known), its client is in the ARN's region, and its dead-letter queue comes from its own
    redrive policy.
    """
    from cloudjobs.backends.sqs import SqsBackend

    return SqsBackend(
        queue_url=queue.url,
        queue_name=None if queue.url else queue.name,
        region=queue.region,
        max_pool_connections=max(10, settings.concurrency + 4),
        wait_time_seconds=settings.wait_time_seconds,
    )


def build_eventbridge_schedules(settings: SettingsModel) -> EventBridgeSchedules:
    """The app's EventBridge Scheduler schedule group (no I/O; the client is built on first use).

    Raises:
        ConfigurationError: ``CLOUDJOBS_SCHEDULE_GROUP`` or ``CLOUDJOBS_SCHEDULER_ROLE_ARN`` is unset.
    """
    from cloudjobs.scheduling.eventbridge import EventBridgeSchedules

    if not settings.schedule_group:
        raise ConfigurationError(
            "EventBridge Scheduler needs the app's schedule group (the Terraform module's "
            "schedule_group output)",
            setting="CLOUDJOBS_SCHEDULE_GROUP",
        )
    if not settings.scheduler_role_arn:
        raise ConfigurationError(
            "EventBridge Scheduler needs the role it assumes to send to the queue (the Terraform "
            "module's scheduler_role_arn output)",
            setting="CLOUDJOBS_SCHEDULER_ROLE_ARN",
        )
    client = None
    if settings.region:
        from cloudjobs.aws_clients import create_client

        client = create_client("scheduler", region=settings.region)
    return EventBridgeSchedules(
        group=settings.schedule_group, role_arn=settings.scheduler_role_arn, client=client
    )


def build_idempotency_store(settings: SettingsModel) -> IdempotencyStore:
    """A :class:`~cloudjobs.idempotency.dynamodb.DynamoDbIdempotencyStore` on the settings' table
    (no I/O).

    Raises:
        ConfigurationError: ``CLOUDJOBS_IDEMPOTENCY_TABLE`` is not set.
    """
    table = settings.idempotency_table
    if not table:
        raise ConfigurationError(
            "idempotent and status-tracked jobs need a store: set CLOUDJOBS_IDEMPOTENCY_TABLE "
            "or pass CloudJobs(idempotency_store=...)",
            setting="CLOUDJOBS_IDEMPOTENCY_TABLE",
        )
    from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore

    return DynamoDbIdempotencyStore(
        table,
        region=settings.region,
        max_pool_connections=max(16, settings.concurrency + 4),
    )
