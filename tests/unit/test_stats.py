"""jobs.stats(): depths from the memory queue, health thresholds, and the CloudWatch age (stubbed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, Settings
from cloudjobs.backends.base import Delivery, OutgoingMessage
from cloudjobs.stats import QueueStats, oldest_message_age


def _send(backend: MemoryBackend, count: int, *, delay: timedelta = timedelta(0)) -> None:
    for index in range(count):
        backend.send([OutgoingMessage(body=f"message {index}", delay=delay)])


def test_stats_count_visible_in_flight_delayed_and_dead_lettered_messages(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)
    _send(backend, 5)
    _send(backend, 2, delay=timedelta(seconds=60))
    received = backend.receive(max_messages=2, wait=timedelta(0))
    [poison] = backend.receive(max_messages=1, wait=timedelta(0))
    backend.dead_letter(poison, {})
    backend.delete([poison.receipt])

    stats = jobs.stats()

    assert (stats.visible, stats.in_flight, stats.delayed, stats.dlq_depth) == (2, len(received), 2, 1)
    assert stats.depth == stats.visible
    assert stats.oldest_message_age is None
    assert [finding.name for finding in stats.unhealthy_findings()] == ["dlq_depth"]
    assert not stats.is_healthy


def test_stats_of_an_empty_queue_with_default_thresholds_are_healthy(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=backend, clock=clock)

    stats = jobs.stats(include_age=True)  # the memory queue has no CloudWatch: unknown

    assert (stats.visible, stats.in_flight, stats.delayed, stats.dlq_depth) == (0, 0, 0, 0)
    assert stats.oldest_message_age is None
    assert stats.is_healthy


def test_the_thresholds_come_from_settings_and_an_unknown_age_never_trips_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDJOBS_MAX_DLQ_DEPTH", "3")
    monkeypatch.setenv("CLOUDJOBS_MAX_OLDEST_AGE_SECONDS", "300")
    settings = Settings(_env_file=None)
    base = QueueStats(
        queue="jobs",
        visible=0,
        in_flight=0,
        delayed=0,
        dlq_depth=3,
        max_dlq_depth=settings.max_dlq_depth,
        max_oldest_age=timedelta(seconds=settings.max_oldest_age_seconds or 0),
    )

    assert base.is_healthy  # 3 messages are allowed; the age is unknown
    old = QueueStats(
        queue="jobs",
        visible=1,
        in_flight=0,
        delayed=0,
        dlq_depth=4,
        oldest_message_age=timedelta(seconds=301),
        max_dlq_depth=3,
        max_oldest_age=timedelta(seconds=300),
    )
    findings = old.unhealthy_findings()
    assert [(finding.name, finding.value, finding.limit) for finding in findings] == [
        ("dlq_depth", 4, 3),
        ("oldest_message_age", 301.0, 300.0),
    ]


def _cloudwatch() -> object:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="eu-west-1"
    ).client("cloudwatch")


def test_the_oldest_age_is_the_latest_maximum_of_the_cloudwatch_metric() -> None:
    client = _cloudwatch()
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with Stubber(client) as stubber:  # type: ignore[arg-type]
        stubber.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {
                        "Id": "oldest",
                        "Timestamps": [now - timedelta(minutes=1), now - timedelta(minutes=2)],
                        "Values": [432.0, 380.0],
                        "StatusCode": "Complete",
                    }
                ]
            },
            {
                "MetricDataQueries": [
                    {
                        "Id": "oldest",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "AWS/SQS",
                                "MetricName": "ApproximateAgeOfOldestMessage",
                                "Dimensions": [{"Name": "QueueName", "Value": "jobs"}],
                            },
                            "Period": 60,
                            "Stat": "Maximum",
                        },
                        "ReturnData": True,
                    }
                ],
                "StartTime": now - timedelta(minutes=5),
                "EndTime": now,
                "ScanBy": ANY,
            },
        )
        age = oldest_message_age("jobs", client=client, now=now)  # type: ignore[arg-type]
        stubber.assert_no_pending_responses()

    assert age == timedelta(seconds=432)


def test_no_data_points_or_a_refused_request_read_as_unknown() -> None:
    client = _cloudwatch()
    with Stubber(client) as stubber:  # type: ignore[arg-type]
        stubber.add_response(
            "get_metric_data",
            {"MetricDataResults": [{"Id": "oldest", "Timestamps": [], "Values": []}]},
        )
        stubber.add_client_error("get_metric_data", service_error_code="AccessDenied", http_status_code=403)
        assert oldest_message_age("jobs", client=client) is None  # type: ignore[arg-type]
        assert oldest_message_age("jobs", client=client) is None  # type: ignore[arg-type]


def test_stats_need_a_backend_that_reports_counts(clock: ManualClock) -> None:
    class _Opaque:
        def info(self) -> object:
            raise AssertionError("not reached")

        def receive(self, **_: object) -> list[Delivery]:
            return []

    from cloudjobs import ConfigurationError
    from cloudjobs.stats import collect_stats

    with pytest.raises(ConfigurationError):
        collect_stats(_Opaque(), Settings(_env_file=None))  # type: ignore[arg-type]
