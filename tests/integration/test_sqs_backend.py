"""SqsBackend over real boto3 and HTTP, against the session's moto server."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cloudjobs.backends.base import Delivery, OutgoingMessage
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CredentialsError,
    QueueNotFoundError,
)
from cloudjobs.local import LocalAwsServer
from cloudjobs.provisioning import ProvisionedQueue

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

MakeQueue = Callable[..., ProvisionedQueue]
MakeBackend = Callable[..., SqsBackend]

_POLL_DEADLINE_SECONDS = 10.0


def _receive_within(
    backend: SqsBackend, *, seconds: float = _POLL_DEADLINE_SECONDS, expected: int = 1
) -> list[Delivery]:
    """Receive until ``expected`` messages arrived or the deadline passed; returns what arrived."""
    deadline = time.monotonic() + seconds
    deliveries: list[Delivery] = []
    while len(deliveries) < expected and time.monotonic() < deadline:
        deliveries += backend.receive(max_messages=10, wait=timedelta(seconds=1))
    return deliveries


def _message_counts(client: SQSClient, queue_url: str) -> tuple[int, int]:
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_sent_message_is_received_with_its_attributes_and_then_deleted(
    make_queue: MakeQueue, make_backend: MakeBackend, sqs_client: SQSClient
) -> None:
    queue = make_queue()
    backend = make_backend(queue_url=queue.queue_url)
    attributes = {"cloudjobs.type": "send_email", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}

    [result] = backend.send([OutgoingMessage(body='{"to": "ünïcode"}', attributes=attributes)])
    [delivery] = _receive_within(backend)

    assert result.is_sent
    assert delivery.message_id == result.message_id
    assert delivery.body == '{"to": "ünïcode"}'
    assert delivery.attributes == attributes
    assert delivery.receive_count == 1
    assert delivery.queue == queue.name
    assert delivery.sent_at.tzinfo is not None
    assert abs(datetime.now(UTC) - delivery.sent_at) < timedelta(minutes=1)
    assert _message_counts(sqs_client, queue.queue_url) == (0, 1)
    assert backend.delete([delivery.receipt]) == []
    assert _message_counts(sqs_client, queue.queue_url) == (0, 0)


def test_queue_is_found_by_name(make_queue: MakeQueue, make_backend: MakeBackend) -> None:
    queue = make_queue()
    backend = make_backend(queue_name=queue.name)

    backend.send([OutgoingMessage(body="by name")])

    assert backend.queue_url() == queue.queue_url
    assert [delivery.body for delivery in _receive_within(backend)] == ["by name"]


def test_delayed_message_stays_hidden_until_its_delay_passes(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    backend = make_backend(queue_url=make_queue().queue_url)
    sent = time.monotonic()

    backend.send([OutgoingMessage(body="later", delay=timedelta(seconds=2))])
    early = backend.receive(max_messages=10, wait=timedelta(0))
    [delivery] = _receive_within(backend)

    assert early == []
    assert delivery.body == "later"
    assert time.monotonic() - sent >= 1.5


def test_message_made_visible_again_is_redelivered_with_receive_count_two(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    backend = make_backend(queue_url=make_queue(visibility_timeout_seconds=600).queue_url)
    backend.send([OutgoingMessage(body="again")])
    [first] = _receive_within(backend)

    gone = backend.change_visibility([(first.receipt, timedelta(0))])
    [second] = _receive_within(backend)

    assert gone == []
    assert second.message_id == first.message_id
    assert second.receive_count == 2


def test_receive_visibility_overrides_the_queue_timeout(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    backend = make_backend(queue_url=make_queue(visibility_timeout_seconds=600).queue_url)
    backend.send([OutgoingMessage(body="short lease")])

    [first] = backend.receive(max_messages=1, wait=timedelta(seconds=2), visibility=timedelta(seconds=1))
    [second] = _receive_within(backend)

    assert second.message_id == first.message_id
    assert second.receive_count == 2


def test_receipts_of_deleted_messages_count_as_gone(make_queue: MakeQueue, make_backend: MakeBackend) -> None:
    backend = make_backend(queue_url=make_queue().queue_url)
    backend.send([OutgoingMessage(body="short-lived")])
    [delivery] = _receive_within(backend)
    backend.delete([delivery.receipt])

    assert backend.change_visibility([(delivery.receipt, timedelta(seconds=30))]) == [delivery.receipt]
    assert backend.delete(["not-a-receipt-handle"]) == []


def test_dead_letter_copies_the_message_into_the_dlq_with_extra_attributes(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    queue = make_queue()
    backend = make_backend(queue_url=queue.queue_url)
    dlq = make_backend(queue_url=queue.dlq_url)
    backend.send([OutgoingMessage(body="doomed", attributes={"cloudjobs.type": "charge"})])
    [delivery] = _receive_within(backend)

    backend.dead_letter(delivery, {"cloudjobs.dead_letter": "permanent: card declined"})
    [dead] = _receive_within(dlq)

    assert dead.body == "doomed"
    assert dead.attributes == {
        "cloudjobs.type": "charge",
        "cloudjobs.dead_letter": "permanent: card declined",
    }
    assert dead.queue == queue.dlq_name


def test_dead_letter_keeps_the_trace_header(make_queue: MakeQueue, make_backend: MakeBackend) -> None:
    queue = make_queue()
    backend = make_backend(queue_url=queue.queue_url)
    trace_header = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    delivery = Delivery(
        message_id="original-id",
        receipt="unused",
        body="traced",
        attributes={},
        receive_count=1,
        sent_at=datetime.now(UTC),
        queue=queue.name,
        system_attributes={"AWSTraceHeader": trace_header},
    )

    backend.dead_letter(delivery, {"cloudjobs.dead_letter": "x"})
    [dead] = _receive_within(make_backend(queue_url=queue.dlq_url))

    assert dead.system_attributes == {"AWSTraceHeader": trace_header}


def test_dead_letter_drops_foreign_attributes_first_past_ten(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    queue = make_queue()
    backend = make_backend(queue_url=queue.queue_url)
    own = {f"cloudjobs.field{index}": "v" for index in range(5)}
    foreign = {f"foreign{index}": "v" for index in range(4)}
    backend.send([OutgoingMessage(body="crowded", attributes={**own, **foreign})])
    [delivery] = _receive_within(backend)
    extra = {"cloudjobs.dead_letter": "x", "cloudjobs.reason": "y", "cloudjobs.attempt": "3"}

    backend.dead_letter(delivery, extra)
    [dead] = _receive_within(make_backend(queue_url=queue.dlq_url))

    assert len(dead.attributes) == 10
    assert dead.attributes.items() >= {**own, **extra}.items()
    assert len(set(dead.attributes) & set(foreign)) == 2


def test_dead_letter_on_fifo_keeps_the_message_group(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    queue = make_queue(fifo=True)
    backend = make_backend(queue_url=queue.queue_url)
    backend.send([OutgoingMessage(body="ordered", group_id="customer-7", deduplication_id="d-1")])
    [delivery] = _receive_within(backend)

    backend.dead_letter(delivery, {"cloudjobs.dead_letter": "x"})
    [dead] = _receive_within(make_backend(queue_url=queue.dlq_url))

    assert delivery.group_id == "customer-7"
    assert dead.group_id == "customer-7"
    assert dead.body == "ordered"


def test_dead_letter_without_a_dlq_is_a_configuration_error(
    sqs_client: SQSClient, make_backend: MakeBackend
) -> None:
    queue_url = sqs_client.create_queue(QueueName=f"no-dlq-{os.urandom(6).hex()}")["QueueUrl"]
    backend = make_backend(queue_url=queue_url)
    try:
        backend.send([OutgoingMessage(body="x")])
        [delivery] = _receive_within(backend)

        with pytest.raises(ConfigurationError):
            backend.dead_letter(delivery, {"cloudjobs.dead_letter": "x"})
    finally:
        sqs_client.delete_queue(QueueUrl=queue_url)


def test_info_reads_the_queue_configuration(make_queue: MakeQueue, make_backend: MakeBackend) -> None:
    queue = make_queue(fifo=True, visibility_timeout_seconds=45, max_receive_count=3, max_message_size=2048)
    backend = make_backend(queue_url=queue.queue_url)

    info = backend.info()

    assert info.name == queue.name
    assert info.url == queue.queue_url
    assert info.is_fifo
    assert info.max_message_size == 2048
    assert info.visibility_timeout == timedelta(seconds=45)
    assert info.max_receive_count == 3
    assert info.dead_letter_queue == queue.dlq_name
    assert backend.dead_letter_queue_url() == queue.dlq_url


def test_info_of_a_standard_queue(make_queue: MakeQueue, make_backend: MakeBackend) -> None:
    queue = make_queue()

    info = make_backend(queue_url=queue.queue_url).info()

    assert not info.is_fifo
    assert info.max_receive_count == 5


def test_batch_entry_refused_by_the_queue_fails_alone(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    backend = make_backend(queue_url=make_queue().queue_url)

    # SQS refuses a delay past 900 s per entry, and moto does the same.
    results = backend.send(
        [
            OutgoingMessage(body="first"),
            OutgoingMessage(body="too late", delay=timedelta(seconds=901)),
            OutgoingMessage(body="third"),
        ]
    )
    received = _receive_within(backend, expected=2)

    assert [result.is_sent for result in results] == [True, False, True]
    assert results[1].error is not None
    assert results[1].error.startswith("InvalidParameterValue")
    assert not results[1].retryable
    assert sorted(delivery.body for delivery in received) == ["first", "third"]


def test_per_message_delay_on_fifo_fails_its_entry_only(
    make_queue: MakeQueue, make_backend: MakeBackend
) -> None:
    backend = make_backend(queue_url=make_queue(fifo=True).queue_url)

    results = backend.send(
        [
            OutgoingMessage(body="now", group_id="g", deduplication_id="1"),
            OutgoingMessage(body="later", group_id="g", deduplication_id="2", delay=timedelta(seconds=5)),
        ]
    )

    assert results[0].is_sent
    assert not results[1].is_sent
    assert [delivery.body for delivery in _receive_within(backend)] == ["now"]


def test_missing_queue_raises_queue_not_found(
    aws_environment: dict[str, str], make_backend: MakeBackend
) -> None:
    name = f"missing-{os.urandom(6).hex()}"
    backend = make_backend(queue_name=name)

    with pytest.raises(QueueNotFoundError) as raised:
        backend.send([OutgoingMessage(body="nowhere")])

    assert raised.value.queue == name


def test_missing_queue_by_url_raises_queue_not_found(
    aws_server: LocalAwsServer, make_backend: MakeBackend
) -> None:
    backend = make_backend(queue_url=f"{aws_server.endpoint_url}/123456789012/missing-{os.urandom(6).hex()}")

    with pytest.raises(QueueNotFoundError):
        backend.info()


def test_missing_credentials_raise_credentials_error(
    make_queue: MakeQueue, make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    queue = make_queue()
    empty = tmp_path / "empty"
    empty.write_text("")
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    backend = make_backend(queue_url=queue.queue_url)

    with pytest.raises(CredentialsError, match="credential chain"):
        backend.receive(max_messages=1, wait=timedelta(0))


def test_unreachable_endpoint_raises_backend_unavailable(
    aws_environment: dict[str, str], make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    backend = make_backend(queue_url="http://127.0.0.1/123456789012/anything")

    with pytest.raises(BackendUnavailableError):
        backend.receive(max_messages=1, wait=timedelta(0))


def test_service_specific_endpoint_variable_is_honoured(
    aws_server: LocalAwsServer,
    make_queue: MakeQueue,
    make_backend: MakeBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = make_queue()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", aws_server.endpoint_url)

    info = make_backend(queue_url=queue.queue_url).info()

    assert info.name == queue.name


def test_client_is_created_anew_in_a_forked_process(
    make_queue: MakeQueue, make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(queue_url=make_queue().queue_url)
    parent_client = backend.client
    backend.send([OutgoingMessage(body="from the parent")])
    child_pid = os.getpid() + 1
    monkeypatch.setattr(os, "getpid", lambda: child_pid)

    try:
        child_client = backend.client
        [delivery] = _receive_within(backend)

        assert child_client is not parent_client
        assert backend.client is child_client
        assert delivery.body == "from the parent"
    finally:
        # The "parent" process is this one: close its client, which the backend left alone.
        parent_client.close()


def test_given_client_is_used_as_is_and_left_open(make_queue: MakeQueue, sqs_client: SQSClient) -> None:
    queue = make_queue()

    with SqsBackend(queue_url=queue.queue_url, client=sqs_client) as backend:
        assert backend.client is sqs_client
        backend.send([OutgoingMessage(body="shared client")])

    assert _message_counts(sqs_client, queue.queue_url) == (1, 0)
