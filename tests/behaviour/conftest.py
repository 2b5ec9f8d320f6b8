"""One harness over both backends: the same semantics are stated once and run on each.

``harness`` is parametrised: ``memory`` (MemoryBackend, in process) and ``sqs`` (SqsBackend over
HTTP against the session's moto server). Tests build a CloudJobs app on a fresh queue, run a real
worker in a thread, and read the outcome from the queue and its DLQ.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import Backend, Delivery
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.envelope import DEAD_LETTER_ATTRIBUTE
from cloudjobs.idempotency.base import IdempotencyStore
from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.provisioning import ProvisionedQueue, TableSpec, delete_table, provision_table
from cloudjobs.runtimes.worker import Worker
from tests.dynamodb_local import DynamoDbLocal

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

DEADLINE = 30.0
"""Seconds any awaited condition may take before a test fails."""
CLOCK_SKEW = timedelta(milliseconds=500)
"""The idempotency stores' clock-skew allowance: one machine here, so a small one keeps tests short."""


def wait_for(condition: Callable[[], bool], *, timeout: float = DEADLINE, message: str = "") -> None:
    """Poll ``condition`` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(0.02)


ATTACK_REPORTS = pytest.StashKey[dict[str, str]]()
"""Backend kind → the attack report line (test_attack_report.py), printed after the session."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the attack reports, as the README's reliability section quotes them."""
    reports = terminalreporter.config.stash.get(ATTACK_REPORTS, {})
    for kind, report in sorted(reports.items()):
        terminalreporter.write_line(f"attacks[{kind}]: {report}")


@dataclass
class Harness:
    """Builds apps on fresh queues of one backend kind and inspects them."""

    kind: str
    make_backend: Callable[..., tuple[Backend, Backend]]
    make_store: Callable[[], IdempotencyStore]
    _dlqs: dict[int, Backend] = field(default_factory=dict)
    _named_dlqs: dict[tuple[int, str], Backend] = field(default_factory=dict)

    def app(
        self,
        *,
        visibility_timeout_seconds: int = 30,
        max_receive_count: int = 5,
        fifo: bool = False,
        random: Callable[[], float] | None = None,
        idempotency_store: IdempotencyStore | None = None,
        with_store: bool = False,
        queues: Sequence[str] = (),
        **settings: Any,
    ) -> CloudJobs:
        """A CloudJobs app on a new queue (and DLQ) of this harness's kind, with an idempotency store
        when asked: ``idempotency_store``, or with ``with_store`` a fresh one of this harness's kind
        (memory; a DynamoDB table on the moto server for ``sqs``).

        ``queues`` names the app's named queues, each on a new queue and DLQ of its own (a name
        ending in ``.fifo`` makes a FIFO queue, named without the suffix)."""
        backend, dlq = self.make_backend(
            visibility_timeout_seconds=visibility_timeout_seconds,
            max_receive_count=max_receive_count,
            fifo=fifo,
        )
        options: dict[str, Any] = {"wait_time_seconds": 1, "shutdown_timeout_seconds": 10, **settings}
        store = idempotency_store
        if store is None and with_store:
            store = self.make_store()
        named: dict[str, str | Backend] = {}
        named_dlqs: dict[str, Backend] = {}
        for queue in queues:
            name = queue.removesuffix(".fifo")
            named[name], named_dlqs[name] = self.make_backend(
                visibility_timeout_seconds=visibility_timeout_seconds,
                max_receive_count=max_receive_count,
                fifo=queue.endswith(".fifo"),
            )
        jobs = CloudJobs(
            settings=Settings(**options),
            backend=backend,
            random=random,
            idempotency_store=store,
            queues=named or None,
        )
        self._dlqs[id(jobs)] = dlq
        for name, named_dlq in named_dlqs.items():
            self._named_dlqs[(id(jobs), name)] = named_dlq
        return jobs

    def dead_letters(
        self, jobs: CloudJobs, *, expected: int, queue: str | None = None
    ) -> list[dict[str, Any]]:
        """Wait until the DLQ (of ``queue``, default the default queue) holds ``expected`` messages;
        return their dead-letter details (with the body and, under ``attributes`` and
        ``typed_attributes``, every message attribute of the copy)."""
        dlq = self._dlqs[id(jobs)] if queue is None else self._named_dlqs[(id(jobs), queue)]
        seen: dict[str, Delivery] = {}

        def collected() -> bool:
            for delivery in dlq.receive(max_messages=10, wait=timedelta(0), visibility=timedelta(seconds=60)):
                seen[delivery.message_id] = delivery
            return len(seen) >= expected

        wait_for(collected, message=f"{expected} dead letters")
        return [
            {
                "body": delivery.body,
                "attributes": dict(delivery.attributes),
                "typed_attributes": dict(delivery.typed_attributes),
                "group_id": delivery.group_id,
                **json.loads(delivery.attributes.get(DEAD_LETTER_ATTRIBUTE, "{}")),
            }
            for delivery in seen.values()
        ]

    def is_empty(self, jobs: CloudJobs, queue: str | None = None) -> bool:
        """True when the queue (default: the default queue) holds no message, visible, in flight or
        delayed."""
        backend = jobs.backend_of(queue)
        if isinstance(backend, MemoryBackend):
            return len(backend) == 0
        assert isinstance(backend, SqsBackend)
        attributes = backend.client.get_queue_attributes(
            QueueUrl=backend.queue_url(),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return all(int(value) == 0 for value in attributes.values())


@pytest.fixture(params=["memory", "sqs"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The behaviour harness for one backend kind."""
    if request.param == "memory":

        def make_memory(
            *, visibility_timeout_seconds: int, max_receive_count: int, fifo: bool
        ) -> tuple[Backend, Backend]:
            name = f"jobs-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
            backend = MemoryBackend(
                name,
                visibility_timeout=timedelta(seconds=visibility_timeout_seconds),
                max_receive_count=max_receive_count,
            )
            assert backend.dead_letter_queue is not None
            return backend, backend.dead_letter_queue

        yield Harness("memory", make_memory, lambda: MemoryIdempotencyStore(clock_skew=CLOCK_SKEW))
        return

    make_queue: Callable[..., ProvisionedQueue] = request.getfixturevalue("make_queue")
    make_backend: Callable[..., SqsBackend] = request.getfixturevalue("make_backend")

    def make_sqs(
        *, visibility_timeout_seconds: int, max_receive_count: int, fifo: bool
    ) -> tuple[Backend, Backend]:
        queue = make_queue(
            fifo=fifo,
            visibility_timeout_seconds=visibility_timeout_seconds,
            max_receive_count=max_receive_count,
        )
        return make_backend(queue_url=queue.queue_url), make_backend(queue_url=queue.dlq_url)

    # DynamoDB Local, not moto: moto does not serialise concurrent conditional writes to one item (two
    # workers taking one lease at the same moment can both succeed there), and these tests run
    # concurrent workers. Every DynamoDB client of the test, the app's own included, goes there.
    dynamodb_local: DynamoDbLocal = request.getfixturevalue("dynamodb_local")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint_url)
    client: DynamoDBClient = boto3.session.Session().client("dynamodb")
    tables: list[TableSpec] = []

    def make_dynamodb_store() -> IdempotencyStore:
        spec = TableSpec(f"test-{uuid.uuid4().hex[:16]}")
        provision_table(spec, client=client)
        tables.append(spec)
        # A short refresh interval: cancel waits it out when it writes a marker.
        return DynamoDbIdempotencyStore(
            spec.name, client=client, clock_skew=CLOCK_SKEW, cancel_refresh=timedelta(milliseconds=50)
        )

    yield Harness("sqs", make_sqs, make_dynamodb_store)
    for spec in tables:
        delete_table(spec, client=client)
    client.close()


@contextlib.contextmanager
def running(jobs: CloudJobs, **options: Any) -> Iterator[Worker]:
    """Run a worker for ``jobs`` in a thread for the ``with`` block; stop and join it after."""
    worker = jobs.worker(**options)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name="behaviour-worker")
    thread.start()
    try:
        wait_for(lambda: worker.started.is_set() or bool(errors), message="the worker to start")
        if errors:
            raise errors[0]
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=DEADLINE)
        assert not thread.is_alive(), "the worker did not stop"
    if errors:
        raise errors[0]
