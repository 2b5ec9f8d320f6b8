"""The per-message builders of frozen dataclasses build the very object ``__init__`` builds."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudjobs.backends.base import Delivery, TypedAttribute, build_delivery
from cloudjobs.definition import JobDefinition
from cloudjobs.envelope import Envelope, decode, encode
from cloudjobs.frozen import draft_of
from cloudjobs.job import Job, build_job
from cloudjobs.retry import RetryPolicy
from cloudjobs.run import Prepared, build_prepared

NOW = datetime(2026, 12, 2, 21, 0, tzinfo=UTC)


def _same(built: Any, expected: Any) -> None:
    """Every field set and equal (compared or not), the same repr and equality, still frozen."""
    assert type(built) is type(expected)
    for field in dataclasses.fields(expected):
        assert getattr(built, field.name) is getattr(expected, field.name) or getattr(
            built, field.name
        ) == getattr(expected, field.name), field.name
    assert built == expected
    assert repr(built) == repr(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.__setattr__(dataclasses.fields(expected)[0].name, "changed")
    assert dataclasses.replace(built) == expected


def _delivery() -> Delivery:
    return build_delivery(
        message_id="m",
        receipt="r",
        body="{}",
        attributes={"a": "1"},
        receive_count=2,
        sent_at=NOW,
        queue="q",
        group_id="g",
        system_attributes={"AWSTraceHeader": "Root=1"},
        typed_attributes={"n": TypedAttribute("Number", "4")},
    )


def test_build_delivery_builds_what_delivery_builds() -> None:
    built = _delivery()
    expected = Delivery(
        "m",
        "r",
        "{}",
        {"a": "1"},
        2,
        NOW,
        "q",
        "g",
        {"AWSTraceHeader": "Root=1"},
        {"n": TypedAttribute("Number", "4")},
    )

    _same(built, expected)
    assert copy.deepcopy(built) == expected


@pytest.mark.parametrize(
    "envelope",
    [
        Envelope(id="i", type="t", payload={"n": [1, "x"]}, correlation_id="c", enqueued_at=NOW),
        Envelope(
            id="i",
            type="t",
            payload=None,
            correlation_id="c",
            enqueued_at=NOW,
            idempotency_key="k",
            attempt_offset=2,
            redrive_count=1,
            due_at=NOW + timedelta(hours=1),
            track_status=True,
            flow_parent="p",
            flow_route="early",
        ),
    ],
    ids=["defaults", "every field"],
)
def test_a_decoded_envelope_is_what_envelope_builds(envelope: Envelope) -> None:
    decoded = decode(encode(envelope))

    assert decoded == envelope
    # The very object Envelope(...) builds from the decoded values (times keep their tzinfo object).
    _same(
        decoded,
        Envelope(**{field.name: getattr(decoded, field.name) for field in dataclasses.fields(Envelope)}),
    )
    assert copy.deepcopy(decoded) == envelope


def test_build_job_builds_what_job_builds_with_a_fresh_signal_of_its_own() -> None:
    delivery = _delivery()
    envelope = Envelope(id="i", type="t", payload=None, correlation_id="c", enqueued_at=NOW)

    def reporter(job: Job, percent: int) -> None: ...

    arguments: dict[str, Any] = {
        "id": "i",
        "type": "t",
        "attempt": 2,
        "max_attempts": 5,
        "enqueued_at": NOW,
        "correlation_id": "c",
        "queue": "q",
        "timeout": timedelta(seconds=30),
        "idempotency_key": "k",
        "message": delivery,
        "envelope": envelope,
        "progress_reporter": reporter,
    }
    built, other = build_job(**arguments), build_job(**arguments)
    expected = Job(**arguments)

    assert built == expected
    assert repr(built) == repr(expected)
    for field in dataclasses.fields(Job):
        if field.name != "cancel_signal":
            assert getattr(built, field.name) == getattr(expected, field.name), field.name
    assert built.child_results_reader is None
    assert built.cancel_signal is not other.cancel_signal
    assert not built.cancelled
    built.cancel_signal.set()
    assert built.cancelled
    assert not other.cancelled
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.__setattr__("id", "changed")


def test_build_prepared_builds_what_prepared_builds() -> None:
    delivery = _delivery()
    envelope = Envelope(id="i", type="t", payload=None, correlation_id="c", enqueued_at=NOW)
    definition = JobDefinition.from_function(
        "t", lambda payload: None, max_attempts=None, timeout=None, retry=None
    )
    job = Job("i", "t", 1, 3, NOW, "c", "q", timedelta(1), None, delivery, envelope)
    policy = RetryPolicy(max_attempts=3, base=timedelta(seconds=1), cap=timedelta(seconds=2))

    built = build_prepared(delivery, envelope, definition, {"p": 1}, job, policy)

    _same(built, Prepared(delivery, envelope, definition, {"p": 1}, job, policy))


def test_a_builder_that_misses_or_reorders_a_field_fails_at_import() -> None:
    with pytest.raises(TypeError, match="Prepared"):
        draft_of(Prepared, "delivery", "envelope", "definition", "payload", "job")
    with pytest.raises(TypeError, match="Prepared"):
        draft_of(Prepared, "envelope", "delivery", "definition", "payload", "job", "policy")


def test_only_a_slotted_dataclass_of_its_own_gets_a_draft() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithDict:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived(Prepared):
        extra: int = 0

    with pytest.raises(TypeError, match="WithDict"):
        draft_of(WithDict, "a")
    with pytest.raises(TypeError, match="Derived"):
        draft_of(Derived, "delivery", "envelope", "definition", "payload", "job", "policy", "extra")


def test_a_draft_becomes_its_class_and_is_frozen_from_then_on() -> None:
    draft = draft_of(Prepared, "delivery", "envelope", "definition", "payload", "job", "policy")
    built = object.__new__(draft)
    built.payload = {"p": 1}

    built.__class__ = Prepared

    assert type(built) is Prepared
    assert built.payload == {"p": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.payload = None  # type: ignore[misc]
