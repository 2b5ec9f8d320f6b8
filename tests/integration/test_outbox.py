"""The transactional outbox on a real PostgreSQL server and on SQLite, with SQS on moto's server.

Each test uses tables of its own (the PostgreSQL server is shared by the session) and queues of
its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, func, insert, select
from sqlalchemy.orm import Session

from cloudjobs import CloudJobs, MemoryBackend, PayloadValidationError, Settings
from cloudjobs.backends.base import OutgoingMessage, SendResult
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.clock import ManualClock
from cloudjobs.envelope import decode
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.idempotency.status import JobState
from cloudjobs.outbox import Outbox
from cloudjobs.payloads.pointer import is_pointer_message
from cloudjobs.payloads.store import MemoryPayloadStore, object_key
from cloudjobs.provisioning import ProvisionedQueue
from cloudjobs.telemetry.propagation import correlation_scope
from tests.otel import Capture
from tests.outbox_postgres import PostgresServer

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

MakeQueue = Callable[..., ProvisionedQueue]


class Order(BaseModel):
    order_id: str


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A database for the test: the session's PostgreSQL server, or a SQLite file of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url()


@pytest.fixture
def make_engine(database_url: str) -> Iterator[Callable[[], Engine]]:
    """Engines on the test's database (one per relay, as separate processes would have), disposed after."""
    engines: list[Engine] = []

    def make() -> Engine:
        engine = create_engine(database_url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def names() -> tuple[str, str]:
    """Table names of the test's own: the outbox and the orders (the business table)."""
    suffix = uuid.uuid4().hex[:12]
    return f"outbox_{suffix}", f"orders_{suffix}"


def orders_table(name: str) -> Table:
    return Table(name, MetaData(), Column("order_id", String(64), primary_key=True))


def app_on(backend: object) -> CloudJobs:
    jobs = CloudJobs(backend=backend, idempotency_store=MemoryIdempotencyStore())  # type: ignore[arg-type]

    @jobs.job("confirm-order", idempotent=True)
    def confirm_order(payload: Order) -> None: ...

    return jobs


def place_order(outbox: Outbox, engine: Engine, orders: Table, order_id: str, **options: object) -> str:
    """The business write and its job, in one transaction."""
    with Session(engine) as session, session.begin():
        session.execute(insert(orders).values(order_id=order_id))
        return outbox.enqueue(session, "confirm-order", Order(order_id=order_id), **options)  # type: ignore[arg-type]


def unsent_rows(outbox: Outbox, engine: Engine) -> int:
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).select_from(outbox.table).where(outbox.table.c.sent_at.is_(None))
        ).scalar_one()
    return int(count)


def all_rows(outbox: Outbox, engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(outbox.table)).scalar_one())


def drain_queue(client: SQSClient, queue_url: str) -> list[dict[str, object]]:
    """Every message on the queue (received until a receive returns none), hidden for the test."""
    messages: list[dict[str, object]] = []
    while True:
        response = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=600,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        received = response.get("Messages", [])
        if not received:
            return messages
        messages.extend(dict(message) for message in received)


def job_ids(messages: list[dict[str, object]]) -> list[str]:
    return [json.loads(str(message["Body"]))["id"] for message in messages]


def relay_until_empty(outbox: Outbox, **options: object) -> int:
    relay = outbox.relay(**options)  # type: ignore[arg-type]
    sent = 0
    while passed := relay.relay_once():
        sent += passed
    return sent


# -- both databases ---------------------------------------------------------------------------------


def test_a_rolled_back_transaction_sends_nothing(
    make_engine: Callable[[], Engine],
    names: tuple[str, str],
    make_queue: MakeQueue,
    make_backend: Callable[..., SqsBackend],
    sqs_client: SQSClient,
) -> None:
    queue = make_queue()
    engine = make_engine()
    outbox = Outbox(app_on(make_backend(queue_url=queue.queue_url)), engine, table_name=names[0])
    outbox.create_table()
    orders = orders_table(names[1])
    orders.create(engine)

    def declined_order() -> None:
        with Session(engine) as session, session.begin():
            session.execute(insert(orders).values(order_id="o-1"))
            outbox.enqueue(session, "confirm-order", Order(order_id="o-1"))
            raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError, match="payment declined"):
        declined_order()

    assert relay_until_empty(outbox) == 0
    assert all_rows(outbox, engine) == 0
    assert drain_queue(sqs_client, queue.queue_url) == []


def test_a_committed_job_is_sent_exactly_once_as_enqueue_sends_it(
    make_engine: Callable[[], Engine],
    names: tuple[str, str],
    make_queue: MakeQueue,
    make_backend: Callable[..., SqsBackend],
    sqs_client: SQSClient,
) -> None:
    queue = make_queue()
    engine = make_engine()
    jobs = app_on(make_backend(queue_url=queue.queue_url))
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    orders = orders_table(names[1])
    orders.create(engine)

    job_id = place_order(outbox, engine, orders, "o-1", idempotency_key="order-o-1")
    assert relay_until_empty(outbox) == 1
    assert relay_until_empty(outbox) == 0
    [relayed] = drain_queue(sqs_client, queue.queue_url)
    direct_id = jobs.enqueue("confirm-order", Order(order_id="o-1"), idempotency_key="order-o-1")
    [direct] = drain_queue(sqs_client, queue.queue_url)

    envelope, expected = decode(str(relayed["Body"])), decode(str(direct["Body"]))
    assert envelope.id == job_id
    assert (envelope.type, envelope.payload, envelope.idempotency_key) == (
        expected.type,
        expected.payload,
        expected.idempotency_key,
    )
    attributes = relayed["MessageAttributes"]
    assert isinstance(attributes, dict)
    assert attributes.keys() == direct["MessageAttributes"].keys()  # type: ignore[attr-defined]
    assert attributes["cloudjobs.id"]["StringValue"] == job_id
    assert direct_id != job_id
    assert unsent_rows(outbox, engine) == 0


def test_a_payload_that_fails_its_schema_is_refused_before_anything_is_written(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    engine = make_engine()
    outbox = Outbox(app_on(MemoryBackend()), engine, table_name=names[0])
    outbox.create_table()

    with pytest.raises(PayloadValidationError), Session(engine) as session, session.begin():
        outbox.enqueue(session, "confirm-order", {"order": 1})

    assert all_rows(outbox, engine) == 0


def test_a_delay_counts_from_the_enqueue_not_from_the_relay(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    jobs = CloudJobs(backend=backend, clock=clock)
    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    enqueued_at = clock.now()

    with Session(engine) as session, session.begin():
        outbox.enqueue(session, "remind", {"order": "o-1"}, delay=30)
    clock.advance(10)
    relay_until_empty(outbox, clock=clock)

    [message] = backend.messages()
    assert message.visible_at == enqueued_at + timedelta(seconds=30)


class FailingFirstSends:
    """A memory queue whose first ``failures`` sends refuse every entry (not retryable)."""

    def __init__(self, inner: MemoryBackend, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def send(self, messages: list[OutgoingMessage]) -> list[SendResult]:
        if self.failures:
            self.failures -= 1
            return [SendResult(error="InvalidMessageContents: refused") for _ in messages]
        return self.inner.send(messages)


def test_a_failed_send_is_retried_after_its_backoff(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    jobs = CloudJobs(backend=FailingFirstSends(backend, failures=1), clock=clock)  # type: ignore[arg-type]
    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    with Session(engine) as session, session.begin():
        job_id = outbox.enqueue(session, "remind", {"order": "o-1"})
    relay = outbox.relay(clock=clock)

    assert relay.relay_once() == 0
    assert relay.report.failed == 1
    with engine.connect() as connection:
        row = connection.execute(select(outbox.table)).mappings().one()
    assert (row["attempts"], row["next_attempt_at"]) == (1, clock.now() + timedelta(seconds=1))
    assert "refused" in row["last_error"]
    assert relay.relay_once() == 0  # still backing off
    clock.advance(1)
    assert relay.relay_once() == 1
    assert [decode(message.body).id for message in backend.messages()] == [job_id]


def test_sent_rows_are_kept_for_the_retention_then_deleted(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    clock = ManualClock()
    jobs = CloudJobs(backend=MemoryBackend(clock=clock), clock=clock)
    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    with Session(engine) as session, session.begin():
        outbox.enqueue(session, "remind", {"order": "o-1"})
    relay = outbox.relay(retention=timedelta(hours=1), clock=clock)

    assert relay.relay_once() == 1
    assert relay.clean_up() == 0
    assert all_rows(outbox, engine) == 1
    clock.advance(timedelta(hours=1, seconds=1))
    assert relay.clean_up() == 1
    assert all_rows(outbox, engine) == 0


def test_with_no_retention_a_row_is_deleted_once_sent(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    jobs = CloudJobs(backend=MemoryBackend())
    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    with Session(engine) as session, session.begin():
        outbox.enqueue(session, "remind", {"order": "o-1"})

    assert relay_until_empty(outbox, retention=timedelta(0)) == 1
    assert all_rows(outbox, engine) == 0


def test_each_job_reaches_the_queue_of_its_type(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    default, critical = MemoryBackend(), MemoryBackend()
    jobs = CloudJobs(backend=default, queues={"critical": critical})

    @jobs.job("page-on-call", queue="critical")
    def page(payload: dict[str, str]) -> None: ...

    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    with Session(engine) as session, session.begin():
        paged = outbox.enqueue(session, "page-on-call", {"who": "ops"})
        reminded = outbox.enqueue(session, "remind", {"order": "o-1"})

    assert relay_until_empty(outbox) == 2
    assert [decode(message.body).id for message in critical.messages()] == [paged]
    assert [decode(message.body).id for message in default.messages()] == [reminded]


def test_the_trace_context_and_correlation_id_are_those_of_the_enqueue_and_the_send_is_counted(
    make_engine: Callable[[], Engine], names: tuple[str, str], otel: Capture
) -> None:
    backend = MemoryBackend(names[0])  # metrics are told apart by queue name
    jobs = CloudJobs(backend=backend)
    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    queue = {"messaging.destination.name": backend.info().name, "cloudjobs.job.type": "remind"}

    with (
        trace.get_tracer("tests").start_as_current_span("place order") as request,
        correlation_scope("req-42"),
    ):
        with Session(engine) as session, session.begin():
            outbox.enqueue(session, "remind", {"order": "o-1"})
        trace_id = format(request.get_span_context().trace_id, "032x")
    assert otel.value("cloudjobs.jobs.enqueued", **queue) == 0
    relay_until_empty(outbox)

    [message] = backend.messages()
    assert decode(message.body).correlation_id == "req-42"
    assert message.attributes["traceparent"].split("-")[1] == trace_id
    assert otel.value("cloudjobs.jobs.enqueued", **queue) == 1


def test_a_body_too_large_for_the_queue_is_stored_by_the_relay_and_runs_in_full(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    store = MemoryPayloadStore()
    backend = MemoryBackend()
    jobs = CloudJobs(
        settings=Settings(_env_file=None, payload_threshold_bytes=4096),
        backend=backend,
        payload_store=store,
    )
    seen: list[int] = []

    @jobs.job("export")
    def export(payload: dict[str, str]) -> None:
        seen.append(len(payload["rows"]))

    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()

    def rolled_back() -> None:
        with Session(engine) as session, session.begin():
            outbox.enqueue(session, "export", {"rows": "x" * 10_000})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        rolled_back()
    with Session(engine) as session, session.begin():
        job_id = outbox.enqueue(session, "export", {"rows": "y" * 10_000})
    assert store.keys() == []  # nothing is stored before the relay sends
    relay_until_empty(outbox)

    assert store.keys() == [object_key("export", job_id)]
    [message] = backend.messages()
    assert is_pointer_message(message)  # type: ignore[arg-type]
    assert jobs.drain().completed == 1
    assert seen == [10_000]


def test_a_tracked_job_keeps_its_record_from_the_relay_send_and_reports_its_result(
    make_engine: Callable[[], Engine], names: tuple[str, str]
) -> None:
    backend = MemoryBackend()
    jobs = CloudJobs(backend=backend, idempotency_store=MemoryIdempotencyStore(clock=backend))

    @jobs.job("export")
    def export(payload: dict[str, int]) -> int:
        return payload["rows"] * 2

    engine = make_engine()
    outbox = Outbox(jobs, engine, table_name=names[0])
    outbox.create_table()
    with Session(engine) as session, session.begin():
        job_id = outbox.enqueue(session, "export", {"rows": 21}, track_status=True)
    assert jobs.status(job_id) is None  # not sent yet

    relay_until_empty(outbox)
    status = jobs.status(job_id)
    assert status is not None
    assert status.state is JobState.PENDING
    assert jobs.drain().completed == 1
    assert jobs.result(job_id, timeout=5) == 42
