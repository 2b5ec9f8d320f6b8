"""What the producer refuses never reaches the queue; what it lets through runs, on both backends.

Anything the harness's apps do not cover (``refuse_unregistered``) is built here on its backends.
"""

from __future__ import annotations

import pytest

from cloudjobs import CloudJobs, PayloadValidationError, Settings, UnknownJobError
from tests.behaviour.conftest import Harness, running, wait_for
from tests.payloads import Charge, Email, UrgentEmail


def test_a_model_of_another_class_is_refused_before_anything_is_sent(harness: Harness) -> None:
    jobs = harness.app()

    @jobs.job("send-email")
    def send_email(payload: Email) -> None: ...

    with pytest.raises(PayloadValidationError):
        send_email.enqueue(Charge(to="a@example.com"))  # type: ignore[arg-type]
    with pytest.raises(PayloadValidationError):
        jobs.enqueue_many([("send-email", Email(to="a@example.com")), ("send-email", Charge(to="b"))])

    assert harness.is_empty(jobs)


def test_a_subclass_instance_is_sent_as_the_declared_model_and_handled(harness: Harness) -> None:
    jobs = harness.app()
    received: list[Email] = []

    @jobs.job("send-email")
    def send_email(payload: Email) -> None:
        received.append(payload)

    send_email.enqueue(UrgentEmail(to="a@example.com", priority=3))

    with running(jobs) as worker:
        settled = ("completed", "retried", "dead_lettered")
        wait_for(lambda: sum(worker.counts[name] for name in settled) == 1, message="the job to settle")
    assert worker.counts["completed"] == 1
    assert received == [Email(to="a@example.com")]


def test_an_app_that_refuses_unregistered_types_sends_nothing_for_a_misspelt_one(harness: Harness) -> None:
    backend, _ = harness.make_backend(visibility_timeout_seconds=30, max_receive_count=5, fifo=False)
    jobs = CloudJobs(settings=Settings(wait_time_seconds=1), backend=backend, refuse_unregistered=True)

    @jobs.job("send-email")
    def send_email(payload: Email) -> None: ...

    with pytest.raises(UnknownJobError, match="did you mean 'send-email'"):
        jobs.enqueue("send-emial", {"to": "a@example.com"})
    with pytest.raises(UnknownJobError):
        jobs.enqueue_many([("send-email", {"to": "a@example.com"}), ("send-emial", {"to": "b"})])

    assert harness.is_empty(jobs)
