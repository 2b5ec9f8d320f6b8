"""Queue ARNs: the name and region of the queue a Lambda record names, and the URL it stands for."""

from __future__ import annotations

import pytest

from cloudjobs import Settings
from cloudjobs.aws_defaults import build_event_source_backend
from cloudjobs.queues import QueueArn


@pytest.mark.parametrize(
    ("arn", "url"),
    [
        (
            "arn:aws:sqs:eu-west-1:123456789012:jobs.fifo",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo",
        ),
        (
            "arn:aws-cn:sqs:cn-north-1:123456789012:jobs",
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/jobs",
        ),
        (
            "arn:aws-us-gov:sqs:us-gov-west-1:123456789012:jobs",
            "https://sqs.us-gov-west-1.amazonaws.com/123456789012/jobs",
        ),
        ("arn:aws-iso:sqs:us-iso-east-1:123456789012:jobs", None),  # unknown URL form: looked up by name
    ],
)
def test_a_queue_arn_gives_its_queues_url_where_the_partitions_url_form_is_known(
    arn: str, url: str | None
) -> None:
    parsed = QueueArn.parse(arn)

    assert parsed is not None
    assert parsed.name == arn.rsplit(":", 1)[-1]
    assert parsed.url == url


@pytest.mark.parametrize(
    "arn",
    ["", "bad-arn", "arn:aws:s3:::my-bucket", "arn:aws:sqs:us-east-1:123456789012:", "arn:aws:sqs:a:b:c:d"],
)
def test_a_string_that_names_no_sqs_queue_is_not_a_queue_arn(arn: str) -> None:
    assert QueueArn.parse(arn) is None


def test_the_event_source_backend_is_built_on_the_arns_queue_and_region_without_io() -> None:
    queue = QueueArn.parse("arn:aws:sqs:ap-south-1:210987654321:reports")
    assert queue is not None
    with build_event_source_backend(Settings(_env_file=None), queue) as backend:
        assert backend.name == "reports"
        assert backend.queue_url() == "https://sqs.ap-south-1.amazonaws.com/210987654321/reports"
        assert backend.client.meta.region_name == "ap-south-1"
