"""Outbox relays at work: several at once, woken by commits, killed mid-batch, stopped by SIGTERM.

PostgreSQL runs on a server the tests start; SQLite in a file of the test's own; SQS on moto.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from cloudjobs import CloudJobs, MemoryBackend
from cloudjobs.backends.base import Backend, OutgoingMessage, SendResult
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.envelope import decode
from cloudjobs.outbox import Outbox, Relay
from cloudjobs.provisioning import ProvisionedQueue
from tests.integration.outbox_app import STALL_FILE_VARIABLE
from tests.integration.test_outbox import drain_queue, job_ids
from tests.outbox_postgres import PostgresServer

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

MakeQueue = Callable[..., ProvisionedQueue]
DEADLINE = 60.0


def wait_for(condition: Callable[[], bool], *, message: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.02)


class RecordingBackend:
    """A backend that records every entry it sent: (job id, message group), in send order."""

    def __init__(self, inner: Backend, ledger: list[tuple[str, str | None]], lock: threading.Lock) -> None:
        self.inner = inner
        self.ledger = ledger
        self.lock = lock

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        with self.lock:
            results = self.inner.send(messages)
            for message, result in zip(messages, results, strict=True):
                if result.is_sent:
                    self.ledger.append((decode(message.body).id, message.group_id))
        return results


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.url()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url()


@pytest.fixture
def make_engine() -> Iterator[Callable[[str], Engine]]:
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engine = create_engine(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def table_name() -> str:
    return f"outbox_{uuid.uuid4().hex[:12]}"


def unsent_rows(outbox: Outbox, engine: Engine) -> int:
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).select_from(outbox.table).where(outbox.table.c.sent_at.is_(None))
        ).scalar_one()
    return int(count)


def start(relay: Relay) -> threading.Thread:
    thread = threading.Thread(target=relay.run, name="relay", daemon=True)
    thread.start()
    return thread


def stop(relay: Relay, thread: threading.Thread) -> None:
    relay.stop()
    thread.join(timeout=DEADLINE)
    assert not thread.is_alive()


# -- several relays on PostgreSQL -----------------------------------------------------------------------


def test_two_live_relays_never_send_a_row_twice_and_keep_each_group_in_order(
    postgres_url: str,
    make_engine: Callable[[str], Engine],
    table_name: str,
    make_queue: MakeQueue,
    make_backend: Callable[..., SqsBackend],
) -> None:
    ledger: list[tuple[str, str | None]] = []
    lock = threading.Lock()
    standard, fifo = make_queue(), make_queue(fifo=True)
    plain = RecordingBackend(make_backend(queue_url=standard.queue_url), ledger, lock)
    ordered = RecordingBackend(make_backend(queue_url=fifo.queue_url), ledger, lock)
    jobs = CloudJobs(backend=plain, queues={"ordered": ordered})  # type: ignore[arg-type,dict-item]
    writer = make_engine(postgres_url)
    outbox = Outbox(jobs, writer, table_name=table_name)
    outbox.create_table()
    enqueued: list[tuple[str, str | None]] = []

    def place(index: int) -> None:
        group = f"customer-{index % 3}"
        with Session(writer) as session, session.begin():
            enqueued.append((outbox.enqueue(session, "confirm-order", {"n": index}), None))
            shipment = outbox.enqueue(session, "ship", {"n": index}, queue="ordered", group_id=group)
            enqueued.append((shipment, group))

    for index in range(60):  # a backlog for the relays to compete over
        place(index)
    relays = [Outbox(jobs, make_engine(postgres_url), table_name=table_name).relay() for _ in range(2)]
    threads = [start(relay) for relay in relays]
    for index in range(60, 120):  # and rows committed while they run
        place(index)
    wait_for(lambda: unsent_rows(outbox, writer) == 0, message="every row to be sent")
    for relay, thread in zip(relays, threads, strict=True):
        stop(relay, thread)

    sends = Counter(job_id for job_id, _ in ledger)
    assert [job_id for job_id, count in sends.items() if count > 1] == []
    assert set(sends) == {job_id for job_id, _ in enqueued}
    assert sum(relay.report.sent for relay in relays) == len(enqueued)
    for group in {group for _, group in enqueued if group is not None}:
        assert [j for j, g in ledger if g == group] == [j for j, g in enqueued if g == group], group


def test_a_commit_wakes_a_waiting_relay_without_polling(
    postgres_url: str, make_engine: Callable[[str], Engine], table_name: str
) -> None:
    backend = MemoryBackend()
    jobs = CloudJobs(backend=backend)
    engine = make_engine(postgres_url)
    outbox = Outbox(jobs, engine, table_name=table_name)
    outbox.create_table()
    # Far longer than the test may take: only a notification can wake the relay in time.
    relay = Outbox(jobs, make_engine(postgres_url), table_name=table_name).relay(
        poll_interval=timedelta(hours=1)
    )
    thread = start(relay)

    for expected in (1, 2):
        with Session(engine) as session, session.begin():
            outbox.enqueue(session, "remind", {"n": expected})
        wait_for(lambda n=expected: len(backend.messages()) == n, message=f"message {expected}")  # type: ignore[misc]
    stop(relay, thread)


# -- either database: processes ------------------------------------------------------------------------


def relay_process(database_url: str, table_name: str, environment: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cloudjobs.cli", "relay", "tests.integration.outbox_app:jobs"]
    return subprocess.Popen(
        [*command, "--database-url", database_url, "--table", table_name, "--log-format", "text"],
        env={**os.environ, **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_relay_killed_between_send_and_mark_loses_nothing(
    database_url: str,
    make_engine: Callable[[str], Engine],
    table_name: str,
    make_queue: MakeQueue,
    make_backend: Callable[..., SqsBackend],
    sqs_client: SQSClient,
    tmp_path: Path,
) -> None:
    queue = make_queue()
    jobs = CloudJobs(backend=make_backend(queue_url=queue.queue_url))
    engine = make_engine(database_url)
    outbox = Outbox(jobs, engine, table_name=table_name)
    outbox.create_table()
    with Session(engine) as session, session.begin():
        enqueued = [outbox.enqueue(session, "confirm-order", {"n": index}) for index in range(25)]
    stall_file = tmp_path / "stalled"

    process = relay_process(
        database_url,
        table_name,
        {"CLOUDJOBS_QUEUE_URL": queue.queue_url, STALL_FILE_VARIABLE: str(stall_file)},
    )
    try:
        wait_for(lambda: stall_file.exists() or process.poll() is not None, message="the first batch sent")
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
    first_batch = int(stall_file.read_text())
    assert unsent_rows(outbox, engine) == 25  # sent, but never marked

    # The next relay (on SQLite: once the dead one's lock is gone) sends every row again.
    relay = Outbox(jobs, make_engine(database_url), table_name=table_name).relay()
    thread = start(relay)
    wait_for(lambda: unsent_rows(outbox, engine) == 0, message="every row to be sent")
    stop(relay, thread)

    received = Counter(job_ids(drain_queue(sqs_client, queue.queue_url)))
    assert set(received) == set(enqueued)
    assert sorted(job_id for job_id, count in received.items() if count == 2) == sorted(
        enqueued[:first_batch]
    )
    assert sum(received.values()) == 25 + first_batch


def test_sigterm_stops_a_relay_process_cleanly(
    database_url: str,
    make_engine: Callable[[str], Engine],
    table_name: str,
    make_queue: MakeQueue,
    make_backend: Callable[..., SqsBackend],
    sqs_client: SQSClient,
) -> None:
    queue = make_queue()
    jobs = CloudJobs(backend=make_backend(queue_url=queue.queue_url))
    engine = make_engine(database_url)
    outbox = Outbox(jobs, engine, table_name=table_name)
    outbox.create_table()
    process = relay_process(database_url, table_name, {"CLOUDJOBS_QUEUE_URL": queue.queue_url})
    try:
        with Session(engine) as session, session.begin():
            job_id = outbox.enqueue(session, "confirm-order", {"n": 1})
        wait_for(lambda: unsent_rows(outbox, engine) == 0, message="the row to be sent")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=DEADLINE)
        log = process.stderr.read().decode() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    assert code == 0, log
    assert "relay stopped: 1 rows sent" in log
    assert job_ids(drain_queue(sqs_client, queue.queue_url)) == [job_id]


# -- one relay at a time on SQLite ---------------------------------------------------------------------


def test_a_second_sqlite_relay_waits_for_the_first_and_takes_over_when_it_stops(
    tmp_path: Path, make_engine: Callable[[str], Engine], table_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    backend = MemoryBackend()
    jobs = CloudJobs(backend=backend)
    engine = make_engine(url)
    outbox = Outbox(jobs, engine, table_name=table_name)
    outbox.create_table()
    first = Outbox(jobs, make_engine(url), table_name=table_name).relay()
    second = Outbox(jobs, make_engine(url), table_name=table_name).relay()
    caplog.set_level(logging.INFO, logger="cloudjobs.outbox")
    first_thread = start(first)
    wait_for(lambda: "relay started" in caplog.text, message="the first relay to start")
    second_thread = start(second)
    wait_for(lambda: "waiting to take over" in caplog.text, message="the second relay to wait")

    with Session(engine) as session, session.begin():
        for index in range(5):
            outbox.enqueue(session, "remind", {"n": index})
    wait_for(lambda: unsent_rows(outbox, engine) == 0, message="five rows sent")
    stop(first, first_thread)
    with Session(engine) as session, session.begin():
        outbox.enqueue(session, "remind", {"n": 5})
    wait_for(lambda: unsent_rows(outbox, engine) == 0, message="the sixth row sent")
    stop(second, second_thread)

    assert (first.report.sent, second.report.sent) == (5, 1)
    assert len(backend.messages()) == 6
