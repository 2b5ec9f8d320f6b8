"""Bad input never escapes the pipeline: every delivery gets exactly one typed outcome, in the consumer
core and in the Lambda runtime, whatever its body and attributes hold."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import cloudjobs.preparation
from cloudjobs import (
    Cancelled,
    CloudJobs,
    Completed,
    DeadLetter,
    Deferred,
    Delivery,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    Released,
    Retry,
    Settings,
)
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.envelope import Envelope
from cloudjobs.outcomes import Reason
from cloudjobs.runtimes.aws_lambda import LambdaHandler
from tests.bodies import envelope_body
from tests.unit.test_aws_lambda import build_and_call, dead_letters, receive_all, reported

NESTED = "[" * 5000 + "]" * 5000
"""Deep enough that ``json.loads`` raises RecursionError."""


class Charge(BaseModel):
    order: str
    amount: float


def _app(clock: ManualClock, backend: MemoryBackend) -> CloudJobs:
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=MemoryIdempotencyStore(clock=clock),
    )

    @jobs.job("charge", idempotency_key="order")
    def charge(payload: Charge) -> str:
        return payload.order

    @jobs.job("keyed", idempotency_key=lambda payload: payload["account"])
    def keyed(payload: dict[str, str]) -> None: ...

    @jobs.job("plain")
    def plain(payload: object) -> None: ...

    return jobs


HOSTILE = {
    Reason.MALFORMED_ENVELOPE: '{"cloudjobs": 1, "payload": ' + NESTED + "}",
    Reason.INVALID_IDEMPOTENCY_KEY: envelope_body("keyed", '{"not_account": "x"}'),
    Reason.INVALID_PAYLOAD: envelope_body("charge", '{"order": "o-1", "amount": NaN}'),
}


@pytest.fixture
def lambda_handlers() -> Iterator[Callable[[CloudJobs], LambdaHandler]]:
    built: list[LambdaHandler] = []

    def build(jobs: CloudJobs) -> LambdaHandler:
        handler = jobs.lambda_handler()
        built.append(handler)
        return handler

    yield build
    for handler in built:
        handler.close()


@pytest.mark.parametrize(("reason", "body"), list(HOSTILE.items()), ids=[str(r) for r in HOSTILE])
def test_a_hostile_body_is_dead_lettered_at_once_by_the_consumer(
    clock: ManualClock, backend: MemoryBackend, reason: Reason, body: str
) -> None:
    jobs = _app(clock, backend)
    backend.send([OutgoingMessage(body=body)])
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))

    outcome = jobs.consumer().process(delivery)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason is reason


def test_hostile_bodies_are_dead_lettered_in_lambda_not_reported(
    clock: ManualClock, backend: MemoryBackend, lambda_handlers: Callable[[CloudJobs], LambdaHandler]
) -> None:
    jobs = _app(clock, backend)
    backend.send([OutgoingMessage(body=body) for body in HOSTILE.values()])

    response = build_and_call(lambda_handlers(jobs), receive_all(backend))

    assert reported(response) == []  # dead-lettered, so Lambda may delete them
    assert sorted(str(record["reason"]) for record in dead_letters(backend)) == sorted(HOSTILE)


def test_one_records_system_exit_fails_that_record_not_the_batch(
    clock: ManualClock, backend: MemoryBackend, lambda_handlers: Callable[[CloudJobs], LambdaHandler]
) -> None:
    jobs = _app(clock, backend)
    ran: list[int] = []

    @jobs.job("step")
    def step(payload: dict[str, int]) -> None:
        if payload["n"] == 1:
            raise SystemExit("no")
        ran.append(payload["n"])

    ids = [jobs.enqueue("step", {"n": n}) for n in range(3)]
    deliveries = receive_all(backend)
    failing = next(d.message_id for d in deliveries if json.loads(d.body)["id"] == ids[1])

    response = build_and_call(lambda_handlers(jobs), deliveries)

    assert reported(response) == [failing]
    assert sorted(ran) == [0, 2]


def test_a_memory_error_while_decoding_is_retried_not_dead_lettered(
    clock: ManualClock, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _app(clock, backend)
    jobs.enqueue("plain", {})
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))

    def exhausted(delivery: Delivery, settings: Settings) -> Envelope:
        raise MemoryError

    monkeypatch.setattr(cloudjobs.preparation, "decode_delivery", exhausted)
    outcome = jobs.consumer().process(delivery)

    assert isinstance(outcome, Retry)
    assert outcome.error == "MemoryError"


def test_an_idempotency_key_longer_than_a_record_can_hold_is_dead_lettered(
    clock: ManualClock, backend: MemoryBackend
) -> None:
    jobs = _app(clock, backend)
    backend.send([OutgoingMessage(body=envelope_body("keyed", json.dumps({"account": "a" * 5000})))])
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))

    outcome = jobs.consumer().process(delivery)

    assert isinstance(outcome, DeadLetter)
    assert outcome.reason is Reason.INVALID_IDEMPOTENCY_KEY


_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=200)
_BODIES = st.one_of(
    _TEXT,
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | _TEXT,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
        max_leaves=20,
    ).map(json.dumps),
    st.builds(
        lambda job_type, payload, key: json.dumps(
            {
                "cloudjobs": 1,
                "id": "job",
                "type": job_type,
                "payload": payload,
                "correlation_id": "c",
                "enqueued_at": "2026-01-01T00:00:00+00:00",
                **({"idempotency_key": key} if key is not None else {}),
            }
        ),
        st.sampled_from(["charge", "keyed", "plain", "missing"]) | _TEXT,
        st.dictionaries(_TEXT, st.none() | st.floats() | _TEXT | st.integers(), max_size=3)
        | st.floats()
        | _TEXT,
        st.none() | _TEXT,
    ),
)
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["cloudjobs.type", "cloudjobs.correlation_id", "traceparent", "baggage", "x"]) | _TEXT,
    _TEXT,
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES, attributes=_ATTRIBUTES, receive_count=st.integers(min_value=1, max_value=8))
def test_every_delivery_gets_exactly_one_typed_outcome_whatever_it_holds(
    clock: ManualClock, body: str, attributes: dict[str, str], receive_count: int
) -> None:
    backend = MemoryBackend("jobs", clock=clock)
    jobs = _app(clock, backend)
    applied: list[object] = []
    delivery = Delivery(
        message_id="m-1",
        receipt="r-1",
        body=body,
        attributes=attributes,
        receive_count=receive_count,
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        queue="jobs",
    )

    outcome = jobs.consumer().run(delivery, apply=lambda _, outcome: applied.append(outcome))

    assert isinstance(outcome, Completed | Retry | DeadLetter | Deferred | Released | Cancelled)
    assert applied == [outcome]
    if isinstance(outcome, DeadLetter):
        assert outcome.reason in set(Reason)
