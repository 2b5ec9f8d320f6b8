"""Shared fixtures: a moto server for the session (started on first use), queues and backends on it.

Each test points boto3 at the server through environment variables (set per test with monkeypatch)
and creates uniquely named queues through :mod:`cloudjobs.provisioning`, so tests never share state.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import boto3
import pytest

from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import (
    DEFAULT_DELAY_SECONDS,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECEIVE_COUNT,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    ProvisionedQueue,
    QueueSpec,
    TableSpec,
    delete_queue,
    delete_table,
    provision_queue,
    provision_table,
)
from tests.dynamodb_local import DynamoDbLocal, DynamoDbLocalMissingError
from tests.otel import Capture, capture
from tests.outbox_postgres import PostgresMissingError, PostgresServer, find_binaries

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_sqs.client import SQSClient

# Variables that would steer boto3 away from the local server or its dummy credentials.
_FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


@pytest.fixture(scope="session")
def aws_server() -> Iterator[LocalAwsServer]:
    """A moto server on 127.0.0.1 at a free port, for the whole session."""
    with LocalAwsServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of its own on 127.0.0.1 at a free port, for the whole session (started
    on first use); the test fails, naming the package to install, when the binaries are missing."""
    try:
        find_binaries()
    except PostgresMissingError as exc:
        pytest.fail(str(exc))
    with PostgresServer() as server:
        yield server


@pytest.fixture
def aws_environment(aws_server: LocalAwsServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point boto3 (through the environment, for this test only) at the moto server."""
    for name in _FOREIGN_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    environment = local_environment(aws_server.endpoint_url)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture
def sqs_client(aws_environment: dict[str, str]) -> Iterator[SQSClient]:
    """A plain boto3 SQS client for the moto server, closed after the test."""
    client = boto3.session.Session().client("sqs")
    yield client
    client.close()


@pytest.fixture
def make_queue(sqs_client: SQSClient) -> Iterator[Callable[..., ProvisionedQueue]]:
    """Provision a uniquely named queue and its DLQ from a :class:`QueueSpec`; both deleted after the test.

    Call it with the spec's fields: ``make_queue(fifo=True, visibility_timeout_seconds=1)``.
    """
    specs: list[QueueSpec] = []

    def make(
        *,
        fifo: bool = False,
        visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
        max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        delay_seconds: int = DEFAULT_DELAY_SECONDS,
        content_based_deduplication: bool = False,
    ) -> ProvisionedQueue:
        name = f"test-{uuid.uuid4().hex[:16]}" + (".fifo" if fifo else "")
        spec = QueueSpec(
            name,
            fifo=fifo,
            visibility_timeout_seconds=visibility_timeout_seconds,
            max_receive_count=max_receive_count,
            max_message_size=max_message_size,
            delay_seconds=delay_seconds,
            content_based_deduplication=content_based_deduplication,
        )
        specs.append(spec)
        return provision_queue(spec, client=sqs_client)

    yield make
    for spec in specs:
        delete_queue(spec, client=sqs_client)


@pytest.fixture
def make_backend(aws_environment: dict[str, str]) -> Iterator[Callable[..., SqsBackend]]:
    """Build SqsBackends configured from the environment (as in production); closed after the test."""
    backends: list[SqsBackend] = []

    def make(
        *, queue_url: str | None = None, queue_name: str | None = None, dlq_url: str | None = None
    ) -> SqsBackend:
        backend = SqsBackend(queue_url=queue_url, queue_name=queue_name, dlq_url=dlq_url)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        backend.close()


# -- DynamoDB: moto's server and Amazon's DynamoDB Local ---------------------------------------------


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[DynamoDbLocal]:
    """Amazon's DynamoDB Local on 127.0.0.1 at a free port, for the whole session (started on first use).

    Fails (never skips) when it is not installed, saying how to install it.
    """
    try:
        server = DynamoDbLocal()
        server.start()
    except DynamoDbLocalMissingError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def dynamodb_endpoint(kind: str, request: pytest.FixtureRequest) -> str:
    """The endpoint of DynamoDB implementation ``kind`` (``moto`` or ``dynamodb-local``); the test's
    environment gets the local region and dummy credentials either way."""
    environment: dict[str, str] = request.getfixturevalue("aws_environment")
    if kind == "moto":
        return environment["AWS_ENDPOINT_URL"]
    server: DynamoDbLocal = request.getfixturevalue("dynamodb_local")
    return server.endpoint_url


@pytest.fixture(params=["moto", "dynamodb-local"])
def dynamodb_client(
    request: pytest.FixtureRequest, aws_environment: dict[str, str]
) -> Iterator[DynamoDBClient]:
    """A DynamoDB client for moto's server, then for DynamoDB Local (the stricter one)."""
    endpoint_url = dynamodb_endpoint(request.param, request)
    client: DynamoDBClient = boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url)
    yield client
    client.close()


@pytest.fixture
def make_table(dynamodb_client: DynamoDBClient) -> Iterator[Callable[[], TableSpec]]:
    """Provision uniquely named idempotency tables through :mod:`cloudjobs.provisioning`; deleted after."""
    specs: list[TableSpec] = []

    def make() -> TableSpec:
        spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
        provision_table(spec, client=dynamodb_client)
        specs.append(spec)
        return spec

    yield make
    for spec in specs:
        delete_table(spec, client=dynamodb_client)


@pytest.fixture
def dynamodb_store(
    make_table: Callable[[], TableSpec], dynamodb_client: DynamoDBClient
) -> DynamoDbIdempotencyStore:
    """A DynamoDB idempotency store on a fresh table, on moto's server or on DynamoDB Local."""
    return DynamoDbIdempotencyStore(make_table().name, client=dynamodb_client)


# -- OpenTelemetry ----------------------------------------------------------------------------------


@pytest.fixture
def otel() -> Iterator[Capture]:
    """The OpenTelemetry SDK with an in-memory span exporter and metric reader (installed once per
    process, as the SDK's global providers allow; spans are cleared for each test)."""
    yield from capture()


@pytest.fixture
def xray_propagation() -> Iterator[None]:
    """Add the X-Ray propagator to the global ones (W3C trace context and baggage) for one test."""
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagators.aws import AwsXRayPropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), AwsXRayPropagator()])
    )
    yield
    propagate.set_global_textmap(previous)
