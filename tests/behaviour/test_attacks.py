"""Attacks on the consumer's promises, on both backends: hostile bodies sent as another sender would,
handlers that raise what ``except Exception`` misses. Every message ends with a typed outcome, the
worker stays alive, and nothing is lost."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import Job, PermanentError
from cloudjobs.backends.base import DEFAULT_MAX_MESSAGE_SIZE, OutgoingMessage, TypedAttribute, message_size
from cloudjobs.envelope import Envelope, encode
from tests.behaviour.conftest import Harness, running, wait_for
from tests.bodies import envelope_body


class Charge(BaseModel):
    order: str
    amount: float


def _send_raw(jobs: object, bodies: list[str]) -> None:
    from cloudjobs import CloudJobs

    assert isinstance(jobs, CloudJobs)
    for start in range(0, len(bodies), 10):
        results = jobs.backend.send([OutgoingMessage(body=body) for body in bodies[start : start + 10]])
        assert all(result.is_sent for result in results), results


def test_bodies_that_break_decoding_or_key_derivation_are_dead_lettered_with_their_reason(
    harness: Harness,
) -> None:
    jobs = harness.app(with_store=True)
    ran: list[str] = []

    @jobs.job("charge", idempotency_key="order")
    def charge(payload: Charge) -> None:
        ran.append(payload.order)

    @jobs.job("keyed", idempotency_key=lambda payload: payload["account"])
    def keyed(payload: dict[str, str]) -> None:
        ran.append("keyed")

    nested = "[" * 5000 + "]" * 5000  # json.loads raises RecursionError
    bodies = {
        "malformed_envelope": '{"cloudjobs": 1, "payload": ' + nested + "}",
        "invalid_idempotency_key": envelope_body("keyed", '{"not_account": "x"}'),  # KeyError
        "invalid_payload": envelope_body("charge", '{"order": "o-1", "amount": NaN}'),  # no record holds NaN
    }
    _send_raw(jobs, list(bodies.values()))
    charge.enqueue(Charge(order="o-2", amount=1.0))  # a good job among them still runs

    with running(jobs, concurrency=2):
        dead = harness.dead_letters(jobs, expected=3)
        wait_for(lambda: ran == ["o-2"], message="the good job")

    assert sorted(record["reason"] for record in dead) == sorted(bodies)
    for record in dead:
        assert record["attempts"] == 1  # dead-lettered at once, not after looping to the redrive
        assert record["error"]


_EXITS: list[Callable[[], BaseException]] = [
    lambda: SystemExit(3),
    lambda: KeyboardInterrupt(),
    lambda: GeneratorExit(),
    lambda: asyncio.CancelledError(),
]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_handler_raising_any_base_exception_fails_its_attempt_and_the_worker_goes_on(
    harness: Harness, is_async: bool
) -> None:
    jobs = harness.app(max_attempts=1, random=lambda: 0.0)
    done: list[int] = []
    lock = threading.Lock()

    def misbehave(payload: dict[str, int]) -> None:
        raise _EXITS[payload["kind"]]()

    def good(payload: dict[str, int]) -> None:
        with lock:
            done.append(payload["n"])

    if is_async:

        @jobs.job("exit")
        async def exit_async(payload: dict[str, int]) -> None:
            misbehave(payload)

        @jobs.job("good")
        async def good_async(payload: dict[str, int]) -> None:
            good(payload)

    else:
        jobs.job("exit")(misbehave)
        jobs.job("good")(good)

    jobs.enqueue_many([("exit", {"kind": kind}) for kind in range(len(_EXITS))])
    with running(jobs, concurrency=2) as worker:
        dead = harness.dead_letters(jobs, expected=len(_EXITS))
        jobs.enqueue_many([("good", {"n": n}) for n in range(6)])
        wait_for(lambda: worker.counts["completed"] == 6, message="six good jobs after the exits")
    assert sorted(done) == list(range(6))

    errors = sorted(record["error"].split(":")[0] for record in dead)
    assert errors == sorted(["SystemExit", "KeyboardInterrupt", "GeneratorExit", "CancelledError"])
    assert {record["reason"] for record in dead} == {"max_attempts"}


def test_the_worker_survives_a_handler_that_calls_sys_exit(harness: Harness) -> None:
    jobs = harness.app(max_attempts=2, random=lambda: 0.0)
    ran: list[int] = []

    @jobs.job("quit")
    def quit_(payload: dict[str, int], job: Job) -> None:
        ran.append(job.attempt)
        sys.exit(1)

    jobs.enqueue("quit", {})
    with running(jobs, concurrency=1):
        [dead] = harness.dead_letters(jobs, expected=1)
    assert ran == [1, 2]
    assert dead["reason"] == "max_attempts"
    assert dead["error"] == "SystemExit: 1"
    assert "sys.exit(1)" in dead["traceback"]


def test_typed_attributes_survive_dead_lettering_unchanged(harness: Harness) -> None:
    jobs = harness.app()

    @jobs.job("refuse")
    def refuse(payload: dict[str, int]) -> None:
        raise PermanentError("never")

    body = encode(
        Envelope(
            id=uuid.uuid4().hex,
            type="refuse",
            payload={},
            correlation_id="c",
            enqueued_at=datetime.now(UTC),
        )
    )
    typed = {
        "amount": TypedAttribute("Number", "42.5"),
        "count": TypedAttribute("Number.int", "7"),
        "signature": TypedAttribute("Binary", b"\x00\x01\xfe"),
        "region": TypedAttribute("String.region", "eu"),
    }
    [result] = jobs.backend.send([OutgoingMessage(body=body, typed_attributes=typed)])
    assert result.is_sent
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)

    assert dead["reason"] == "permanent_error"
    assert dead["typed_attributes"] == typed
    assert dead["attributes"]["region"] == "eu"


def test_a_message_at_the_size_limit_is_dead_lettered_once_with_its_reason(harness: Harness) -> None:
    jobs = harness.app()
    runs: list[int] = []

    @jobs.job("big")
    def big(payload: dict[str, str], job: Job) -> None:
        runs.append(job.attempt)
        raise PermanentError("too big to fix")

    # 300 bytes short of 1 MiB with the job's own attributes: the record does not fit beside them.
    envelope = Envelope(
        id=uuid.uuid4().hex,
        type="big",
        payload={"blob": ""},
        correlation_id="c",
        enqueued_at=datetime.now(UTC),
    )
    mirrors = {"cloudjobs.type": "big", "cloudjobs.id": envelope.id, "cloudjobs.correlation_id": "c"}
    room = DEFAULT_MAX_MESSAGE_SIZE - message_size(encode(envelope), mirrors) - 300
    body = encode(dataclasses.replace(envelope, payload={"blob": "x" * room}))
    [result] = jobs.backend.send([OutgoingMessage(body=body, attributes=mirrors)])
    assert result.is_sent, result.error
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)

    assert runs == [1]  # dead-lettered at the first attempt, not run again on every receive
    assert dead["reason"] == "permanent_error"
    assert dead["body"] == body
    assert "traceback" not in dead  # the record gave up its traceback to fit


def test_the_dead_letter_record_holds_no_character_sqs_refuses(harness: Harness) -> None:
    jobs = harness.app()

    @jobs.job("refuse")
    def refuse(payload: dict[str, int]) -> None:
        raise PermanentError("bad \ufffe\U0001f600 input")

    refuse.enqueue({})
    with running(jobs):
        [dead] = harness.dead_letters(jobs, expected=1)

    record = dead["attributes"]["cloudjobs.dead_letter"]
    assert record.isascii()
    assert dead["error"] == "PermanentError: bad \ufffe\U0001f600 input"


def test_typed_attributes_survive_a_redrive_unchanged(harness: Harness) -> None:
    jobs = harness.app()
    fail = True

    @jobs.job("flaky")
    def flaky(payload: dict[str, int]) -> None:
        if fail:
            raise PermanentError("not yet")

    typed = {"amount": TypedAttribute("Number", "3"), "blob": TypedAttribute("Binary", b"\x01\x02")}
    body = encode(
        Envelope(
            id=uuid.uuid4().hex, type="flaky", payload={}, correlation_id="c", enqueued_at=datetime.now(UTC)
        )
    )
    jobs.backend.send([OutgoingMessage(body=body, typed_attributes=typed)])
    with running(jobs):
        wait_for(lambda: len(jobs.dlq.list()) == 1, message="the job in the DLQ")
    fail = False

    report = jobs.dlq.redrive()

    assert report.moved == 1
    [delivery] = jobs.backend.receive(max_messages=1, wait=timedelta(seconds=5))
    assert delivery.typed_attributes == typed
