"""The producer refuses what the consumer would dead-letter, whichever way a job is enqueued.

Every entry point (``enqueue``, ``enqueue_many``, their async twins and the job handle's methods)
goes through one check; the tests run each refusal through all of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from cloudjobs import (
    CloudJobs,
    ManualClock,
    MemoryBackend,
    PayloadValidationError,
    Settings,
    UnknownJobError,
)
from cloudjobs.definition import JobHandle
from cloudjobs.envelope import decode
from tests.payloads import Charge, Email, UrgentEmail

_validated: list[str] = []


class Counted(BaseModel):
    """A payload that records each validation of its field in ``_validated``."""

    to: str

    @field_validator("to")
    @classmethod
    def _record(cls, value: str) -> str:
        _validated.append(value)
        return value


NAMED_ENTRY_POINTS = ("enqueue", "enqueue_async", "enqueue_many", "enqueue_many_async")
"""The entry points that take a job type by name."""
ENTRY_POINTS = (*NAMED_ENTRY_POINTS, "handle.enqueue", "handle.enqueue_many")


def enqueue_through(
    entry_point: str, jobs: CloudJobs, job_type: str | JobHandle[Any, Any], payload: Any
) -> None:
    """Enqueue one payload through ``entry_point`` (``handle.*`` ones need a handle)."""
    match entry_point:
        case "enqueue":
            jobs.enqueue(job_type, payload)
        case "enqueue_async":
            asyncio.run(jobs.enqueue_async(job_type, payload))
        case "enqueue_many":
            jobs.enqueue_many([(job_type, payload)])
        case "enqueue_many_async":
            asyncio.run(jobs.enqueue_many_async([(job_type, payload)]))
        case "handle.enqueue":
            assert isinstance(job_type, JobHandle)
            job_type.enqueue(payload)
        case "handle.enqueue_many":
            assert isinstance(job_type, JobHandle)
            job_type.enqueue_many([payload])
        case _:
            raise AssertionError(entry_point)


@pytest.fixture(params=ENTRY_POINTS)
def entry_point(request: pytest.FixtureRequest) -> str:
    """One of the producer's entry points."""
    return str(request.param)


@pytest.fixture(params=NAMED_ENTRY_POINTS)
def named_entry_point(request: pytest.FixtureRequest) -> str:
    """One of the producer's entry points that take a job type by name."""
    return str(request.param)


@dataclass
class App:
    jobs: CloudJobs
    backend: MemoryBackend
    send_email: JobHandle[Email, None]
    received: list[Email]


def _with_send_email(jobs: CloudJobs, backend: MemoryBackend) -> App:
    """``jobs`` with ``send-email`` (an Email payload); ``received`` holds what its handler got."""
    received: list[Email] = []

    @jobs.job("send-email")
    def send_email(payload: Email) -> None:
        received.append(payload)

    return App(jobs, backend, send_email, received)


@pytest.fixture
def app(jobs: CloudJobs, backend: MemoryBackend) -> App:
    """An app with ``send-email`` on the memory queue."""
    return _with_send_email(jobs, backend)


def _payloads(backend: MemoryBackend) -> list[object]:
    return [decode(message.body).payload for message in backend.messages()]


# -- payloads of the wrong class ---------------------------------------------------------------------


def test_a_model_of_another_class_is_refused_and_nothing_is_sent(app: App, entry_point: str) -> None:
    with pytest.raises(PayloadValidationError) as caught:
        enqueue_through(entry_point, app.jobs, app.send_email, Charge(to="a@example.com"))

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


def test_a_dict_for_a_model_typed_job_is_validated_against_the_model(app: App, entry_point: str) -> None:
    enqueue_through(entry_point, app.jobs, app.send_email, {"to": "a@example.com"})

    with pytest.raises(PayloadValidationError):
        enqueue_through(entry_point, app.jobs, app.send_email, {"to": "a@example.com", "cents": 100})

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


# -- job types this app does not register ------------------------------------------------------------


@pytest.fixture
def refusing(clock: ManualClock, backend: MemoryBackend) -> App:
    """Like ``app``, on an app built with ``refuse_unregistered=True``."""
    jobs = CloudJobs(
        settings=Settings(_env_file=None), backend=backend, clock=clock, refuse_unregistered=True
    )
    return _with_send_email(jobs, backend)


def test_a_refusing_app_raises_for_a_misspelt_type_and_sends_nothing(
    refusing: App, named_entry_point: str
) -> None:
    with pytest.raises(UnknownJobError) as caught:
        enqueue_through(named_entry_point, refusing.jobs, "send-emial", {"to": "a@example.com"})

    assert caught.value.job_name == "send-emial"
    assert caught.value.known == ("send-email",)
    assert str(caught.value) == (
        "no handler registered for job type 'send-emial' (did you mean 'send-email'? registered: send-email)"
    )
    assert len(refusing.backend) == 0


def test_a_refusing_app_sends_nothing_of_a_batch_with_one_unregistered_type(refusing: App) -> None:
    with pytest.raises(UnknownJobError):
        refusing.jobs.enqueue_many([("send-email", {"to": "a@example.com"}), ("billing.charge", {})])

    assert len(refusing.backend) == 0


def test_a_refusing_app_sends_its_own_types_and_the_handles_of_other_apps(
    refusing: App, clock: ManualClock
) -> None:
    elsewhere = CloudJobs(settings=Settings(_env_file=None), backend=MemoryBackend("elsewhere"), clock=clock)

    @elsewhere.job("billing.charge")
    def charge(payload: Charge) -> None: ...

    refusing.send_email.enqueue(Email(to="a@example.com"))
    refusing.jobs.enqueue("send-email", {"to": "b@example.com"})
    refusing.jobs.enqueue(charge, Charge(to="c@example.com"))

    assert [decode(message.body).type for message in refusing.backend.messages()] == [
        "send-email",
        "send-email",
        "billing.charge",
    ]


def test_an_app_that_registers_nothing_and_refuses_refuses_every_type(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = CloudJobs(
        settings=Settings(_env_file=None), backend=backend, clock=clock, refuse_unregistered=True
    )

    with pytest.raises(UnknownJobError, match=r"^no handler registered for job type 'send-email'$"):
        jobs.enqueue("send-email", {})

    assert len(backend) == 0


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "cloudjobs.producer" and record.levelno == logging.WARNING
    ]


def test_the_first_enqueue_of_each_unregistered_type_warns_and_sends(
    app: App, named_entry_point: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cloudjobs.producer")

    enqueue_through(named_entry_point, app.jobs, "send-emial", {"to": "a@example.com"})
    enqueue_through(named_entry_point, app.jobs, "send-emial", {"to": "b@example.com"})
    enqueue_through(named_entry_point, app.jobs, "billing.charge", {"cents": 5})
    app.send_email.enqueue(Email(to="c@example.com"))

    warnings = _warnings(caplog)
    assert [getattr(record, "job_type", None) for record in warnings] == ["send-emial", "billing.charge"]
    assert "registered: send-email" in warnings[0].getMessage()
    assert "did you mean 'send-email'?" in warnings[0].getMessage()
    assert "did you mean" not in warnings[1].getMessage()
    assert len(app.backend) == 4


def test_an_app_that_registers_nothing_sends_any_type_without_a_warning(
    jobs: CloudJobs, backend: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cloudjobs.producer")

    jobs.enqueue("send-email", {"to": "a@example.com"})

    assert _warnings(caplog) == []
    assert len(backend) == 1
