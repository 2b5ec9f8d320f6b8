"""Queue stats and health: depths from queue attributes, the oldest message's age from CloudWatch.

``jobs.stats()`` reads the queue's and its DLQ's approximate counts (``GetQueueAttributes``, one
request each; SQS's counts lag by up to a minute). The age of the oldest message is not a queue
attribute: it is CloudWatch's ``ApproximateAgeOfOldestMessage`` metric, read only when asked
(``include_age=True``: one ``GetMetricData``, the maximum over the last five minutes). When there is
no data point (a new or idle queue, a local server, no permission) the age is None, *unknown*, and an
unknown age never makes the queue unhealthy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from cloudjobs.backends.base import Backend, QueueStatistics
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.errors import ConfigurationError
from cloudjobs.settings import SettingsModel

logger = logging.getLogger("cloudjobs.stats")

AGE_WINDOW: Final = timedelta(minutes=5)
"""How far back the oldest message's age is looked for (SQS publishes it once a minute)."""
_PERIOD_SECONDS: Final = 60


@dataclass(frozen=True, slots=True)
class HealthFinding:
    """One value past its threshold.

    Attributes:
        name: ``dlq_depth`` or ``oldest_message_age``.
        value: the value seen (messages, or seconds).
        limit: the threshold it passed (same unit).
        message: one line for people.
    """

    name: str
    value: float
    limit: float
    message: str


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's depths and its health against the thresholds in force.

    Attributes:
        queue: the queue's name.
        visible: messages ready to receive (the queue's depth).
        in_flight: received and not yet deleted or visible again.
        delayed: sent with a delay that has not passed.
        dlq_depth: messages in the dead-letter queue (None when the queue has none).
        oldest_message_age: CloudWatch's age of the oldest message; None when unknown or not asked.
        max_dlq_depth: the DLQ depth above which the queue is unhealthy (``CLOUDJOBS_MAX_DLQ_DEPTH``).
        max_oldest_age: the age above which it is unhealthy (``CLOUDJOBS_MAX_OLDEST_AGE_SECONDS``;
            None: no limit).
    """

    queue: str
    visible: int
    in_flight: int
    delayed: int
    dlq_depth: int | None
    oldest_message_age: timedelta | None = None
    max_dlq_depth: int = 0
    max_oldest_age: timedelta | None = None

    @property
    def depth(self) -> int:
        """Messages waiting to be received (``visible``)."""
        return self.visible

    def unhealthy_findings(self) -> list[HealthFinding]:
        """Every value past its threshold (empty when healthy); an unknown age is never one."""
        findings: list[HealthFinding] = []
        if self.dlq_depth is not None and self.dlq_depth > self.max_dlq_depth:
            findings.append(
                HealthFinding(
                    "dlq_depth",
                    self.dlq_depth,
                    self.max_dlq_depth,
                    f"dead-letter queue holds {self.dlq_depth} messages (limit {self.max_dlq_depth})",
                )
            )
        age, limit = self.oldest_message_age, self.max_oldest_age
        if age is not None and limit is not None and age > limit:
            findings.append(
                HealthFinding(
                    "oldest_message_age",
                    age.total_seconds(),
                    limit.total_seconds(),
                    f"oldest message is {age.total_seconds():g}s old (limit {limit.total_seconds():g}s)",
                )
            )
        return findings

    @property
    def is_healthy(self) -> bool:
        """True when no value is past its threshold."""
        return not self.unhealthy_findings()


class MetricDataClient(Protocol):
    """The one CloudWatch call stats need (a boto3 ``cloudwatch`` client has it)."""

    def get_metric_data(self, **request: object) -> Mapping[str, object]:
        """CloudWatch GetMetricData."""
        ...


def oldest_message_age(
    queue_name: str,
    *,
    client: MetricDataClient | None = None,
    region: str | None = None,
    now: datetime | None = None,
) -> timedelta | None:
    """The queue's ``ApproximateAgeOfOldestMessage`` (maximum, last 5 minutes), or None when unknown.

    One GetMetricData request. A failed request is logged and reads as unknown: the age is a health
    hint, and its absence must not fail ``stats()``.
    """
    import botocore.exceptions

    end = now or datetime.now(UTC)
    try:
        if client is None:
            from cloudjobs.aws_clients import create_client

            client = create_client("cloudwatch", region=region)
        response = client.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "oldest",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SQS",
                            "MetricName": "ApproximateAgeOfOldestMessage",
                            "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
                        },
                        "Period": _PERIOD_SECONDS,
                        "Stat": "Maximum",
                    },
                    "ReturnData": True,
                }
            ],
            StartTime=end - AGE_WINDOW,
            EndTime=end,
            ScanBy="TimestampDescending",
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        logger.warning("age of the oldest message in %s unknown: %s", queue_name, exc)
        return None
    return _latest_value(response)


def _latest_value(response: Mapping[str, object]) -> timedelta | None:
    results = response.get("MetricDataResults")
    if not isinstance(results, list) or not results or not isinstance(results[0], Mapping):
        return None
    values = results[0].get("Values")
    # TimestampDescending: the first value is the most recent minute's maximum.
    if not isinstance(values, list) or not values or not isinstance(values[0], int | float):
        return None
    return timedelta(seconds=float(values[0]))


def collect_stats(
    backend: Backend,
    settings: SettingsModel,
    *,
    include_age: bool = False,
    read_age: MetricDataClient | None = None,
) -> QueueStats:
    """The stats of ``backend``'s queue, with the thresholds from ``settings``.

    Args:
        backend: the queue; it must offer :class:`~cloudjobs.backends.base.QueueStatistics`.
        settings: ``max_dlq_depth`` and ``max_oldest_age_seconds``, and the region for CloudWatch.
        include_age: also read the oldest message's age from CloudWatch (SQS queues only).
        read_age: the CloudWatch client to use (built from the environment when omitted).

    Raises:
        ConfigurationError: the backend offers no counts.
        BackendError: the counts could not be read.
    """
    if not isinstance(backend, QueueStatistics):
        raise ConfigurationError(f"{type(backend).__name__} reports no queue counts")
    info = backend.info()
    counts = backend.message_counts()
    dead = backend.dead_letter_message_counts()
    age = None
    if include_age and not isinstance(backend, MemoryBackend):
        age = oldest_message_age(info.name, client=read_age, region=settings.region)
    limit = settings.max_oldest_age_seconds
    return QueueStats(
        queue=info.name,
        visible=counts.visible,
        in_flight=counts.in_flight,
        delayed=counts.delayed,
        dlq_depth=dead.total if dead is not None else None,
        oldest_message_age=age,
        max_dlq_depth=settings.max_dlq_depth,
        max_oldest_age=timedelta(seconds=limit) if limit is not None else None,
    )
