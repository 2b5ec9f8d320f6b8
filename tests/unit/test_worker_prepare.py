"""A worker builds its queues' clients when it is built, sending nothing; failures wait for run()."""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3
import pytest

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.errors import CloudjobsError, ConfigurationError


class _PreparedMemory(MemoryBackend):
    """A memory queue that counts prepare() calls, or fails them."""

    def __init__(self, name: str, *, error: CloudjobsError | None = None) -> None:
        super().__init__(name)
        self.prepared = 0
        self._error = error

    def prepare(self) -> None:
        self.prepared += 1
        if self._error is not None:
            raise self._error


def _settings() -> Settings:
    return Settings(_env_file=None)


def test_building_a_worker_prepares_every_queue_it_consumes() -> None:
    default, bulk = _PreparedMemory("default"), _PreparedMemory("bulk")
    jobs = CloudJobs(settings=_settings(), backend=default, queues={"bulk": bulk})

    jobs.worker(queues={"default": 1, "bulk": 1})

    assert (default.prepared, bulk.prepared) == (1, 1)


def test_a_failing_prepare_does_not_fail_building_the_worker() -> None:
    failing = _PreparedMemory("default", error=ConfigurationError("no region", setting="AWS_REGION"))
    jobs = CloudJobs(settings=_settings(), backend=failing)

    worker = jobs.worker()

    assert failing.prepared == 1
    assert worker.queues == ("default",)


class _WatchedSession:
    """A boto3 session that records the clients it builds and the requests they send."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, service: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        self.session = boto3.Session(region_name="eu-west-1")
        self.calls: Counter[str] = Counter()
        self.built: list[object] = []
        self.session.events.register(f"before-call.{service}", self._count)
        original = self.session.client

        def client(*args: Any, **kwargs: Any) -> Any:
            self.built.append(original(*args, **kwargs))
            return self.built[-1]

        monkeypatch.setattr(self.session, "client", client)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


def test_an_sqs_backend_builds_its_client_on_prepare_without_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched = _WatchedSession(monkeypatch, "sqs")
    backend = SqsBackend(
        queue_url="https://sqs.eu-west-1.amazonaws.com/123456789012/jobs", session=watched.session
    )

    backend.prepare()

    assert len(watched.built) == 1
    assert backend.client is watched.built[0]  # the one built, not a second
    assert watched.calls == Counter()


class _PreparedStore:
    """Stands for a store with a client to build: counts prepare() calls."""

    prepared = 0

    def prepare(self) -> None:
        type(self).prepared += 1


def test_building_a_worker_prepares_the_idempotency_store() -> None:
    from cloudjobs.idempotency.memory import MemoryIdempotencyStore

    class Store(MemoryIdempotencyStore, _PreparedStore):
        pass

    jobs = CloudJobs(settings=_settings(), backend=MemoryBackend("jobs"), idempotency_store=Store())

    jobs.worker()

    assert Store.prepared == 1


def test_a_dynamodb_store_builds_its_client_on_prepare_without_a_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudjobs.idempotency.dynamodb import DynamoDbIdempotencyStore

    watched = _WatchedSession(monkeypatch, "dynamodb")
    store = DynamoDbIdempotencyStore("jobs-table", session=watched.session)

    store.prepare()

    assert len(watched.built) == 1
    assert store.client is watched.built[0]
    assert watched.calls == Counter()
