"""The producer refuses what the consumer would dead-letter, whichever way a job is enqueued.

Every entry point (``enqueue``, ``enqueue_many``, their async twins and the job handle's methods)
goes through one check; the tests run each refusal through all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from cloudjobs import CloudJobs, ManualClock, MemoryBackend, PayloadValidationError
from cloudjobs.definition import JobHandle
from cloudjobs.envelope import decode


class Email(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str


class UrgentEmail(Email):
    priority: int = 1


class Charge(BaseModel):
    to: str
    cents: int = 100


_validated: list[str] = []


class Counted(BaseModel):
    """A payload that records each validation of its field in ``_validated``."""

    to: str

    @field_validator("to")
    @classmethod
    def _record(cls, value: str) -> str:
        _validated.append(value)
        return value


Enqueue = Callable[[CloudJobs, JobHandle[Any, Any], Any], object]
"""Enqueue one payload for the handle's job type through one entry point."""

ENTRY_POINTS: dict[str, Enqueue] = {
    "enqueue": lambda jobs, handle, payload: jobs.enqueue(handle.name, payload),
    "enqueue_many": lambda jobs, handle, payload: jobs.enqueue_many([(handle.name, payload)]),
    "enqueue_async": lambda jobs, handle, payload: asyncio.run(jobs.enqueue_async(handle.name, payload)),
    "enqueue_many_async": lambda jobs, handle, payload: asyncio.run(
        jobs.enqueue_many_async([(handle.name, payload)])
    ),
    "handle.enqueue": lambda jobs, handle, payload: handle.enqueue(payload),
    "handle.enqueue_many": lambda jobs, handle, payload: handle.enqueue_many([payload]),
}


@pytest.fixture(params=sorted(ENTRY_POINTS))
def send(request: pytest.FixtureRequest) -> Enqueue:
    """One of the producer's entry points."""
    return ENTRY_POINTS[request.param]


@dataclass
class App:
    jobs: CloudJobs
    backend: MemoryBackend
    send_email: JobHandle[Email, None]
    received: list[Email]


@pytest.fixture
def app(jobs: CloudJobs, backend: MemoryBackend) -> App:
    """``send-email`` (an Email payload) on the memory queue; ``received`` holds what its handler got."""
    received: list[Email] = []

    @jobs.job("send-email")
    def send_email(payload: Email) -> None:
        received.append(payload)

    return App(jobs, backend, send_email, received)


def _payloads(backend: MemoryBackend) -> list[object]:
    return [decode(message.body).payload for message in backend.messages()]


# -- payloads of the wrong class ---------------------------------------------------------------------


def test_a_model_of_another_class_is_refused_and_nothing_is_sent(app: App, send: Enqueue) -> None:
    with pytest.raises(PayloadValidationError) as caught:
        send(app.jobs, app.send_email, Charge(to="a@example.com"))

    assert caught.value.job_name == "send-email"
    assert str(caught.value) == "payload of job 'send-email' must be Email (or a subclass), not Charge"
    assert len(app.backend) == 0


def test_a_refused_model_in_a_batch_stops_the_whole_batch(app: App) -> None:
    with pytest.raises(PayloadValidationError):
        app.jobs.enqueue_many(
            [("send-email", Email(to="a@example.com")), ("send-email", Charge(to="b@example.com"))]
        )

    assert len(app.backend) == 0


def test_a_model_of_the_declared_class_is_sent_without_being_validated_again(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("count")
    def count(payload: Counted) -> None: ...

    payload = Counted(to="a@example.com")
    _validated.clear()

    count.enqueue(payload)

    assert _validated == []
    assert _payloads(backend) == [{"to": "a@example.com"}]


def test_a_subclass_instance_is_sent_as_the_declared_model_and_runs(app: App) -> None:
    # Email forbids extra fields: sending UrgentEmail's own field would dead-let the job.
    app.send_email.enqueue(UrgentEmail(to="a@example.com", priority=3))

    report = app.jobs.drain()

    assert report.completed == 1
    assert app.received == [Email(to="a@example.com")]


def test_a_dict_for_a_model_typed_job_is_validated_against_the_model(app: App, send: Enqueue) -> None:
    send(app.jobs, app.send_email, {"to": "a@example.com"})

    with pytest.raises(PayloadValidationError):
        send(app.jobs, app.send_email, {"to": "a@example.com", "cents": 100})

    assert _payloads(app.backend) == [{"to": "a@example.com"}]


def test_a_model_for_a_job_typed_otherwise_is_checked_as_the_consumer_will_read_it(
    jobs: CloudJobs, backend: MemoryBackend
) -> None:
    @jobs.job("tally")
    def tally(payload: dict[str, int]) -> None: ...

    class Tally(BaseModel):
        cents: int

    tally.enqueue(Tally(cents=5))  # type: ignore[arg-type]  # a model whose JSON fits dict[str, int]
    with pytest.raises(PayloadValidationError):
        tally.enqueue(Charge(to="a@example.com"))  # type: ignore[arg-type]

    assert _payloads(backend) == [{"cents": 5}]


def test_the_handle_of_another_app_checks_the_payload_against_its_own_type(
    app: App, clock: ManualClock, backend: MemoryBackend
) -> None:
    # A producer that registers nothing, holding the consumer app's handle.
    producer = CloudJobs(settings=app.jobs.settings, backend=backend, clock=clock)

    with pytest.raises(PayloadValidationError):
        producer.enqueue(app.send_email, Charge(to="a@example.com"))
    producer.enqueue(app.send_email, {"to": "a@example.com"})

    assert _payloads(backend) == [{"to": "a@example.com"}]


def test_a_model_for_an_unregistered_job_type_is_sent_as_it_is(app: App) -> None:
    app.jobs.enqueue("billing.charge", Charge(to="a@example.com"))

    assert _payloads(app.backend) == [{"to": "a@example.com", "cents": 100}]
