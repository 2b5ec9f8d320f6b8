"""The envelope: the only wire format, and a decoder that is total."""

from __future__ import annotations

import gc
import json
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import JsonValue

import cloudjobs
from cloudjobs.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    ForeignMessageError,
    decode,
    encode,
    json_schema,
)
from cloudjobs.errors import DecodeError

SCHEMA_FILE = Path(cloudjobs.__file__).parent / "schema" / f"envelope-v{ENVELOPE_VERSION}.json"


def _envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "id": "job-1",
        "type": "send-email",
        "payload": {"to": "ada@example.com", "tags": ["a", "é"], "count": 3, "ratio": 0.5, "none": None},
        "correlation_id": "corr-1",
        "enqueued_at": datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
        "idempotency_key": "key-1",
        "attempt_offset": 2,
        "redrive_count": 1,
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def _body(**changes: JsonValue) -> str:
    content: dict[str, JsonValue] = {
        "cloudjobs": 1,
        "id": "job-1",
        "type": "send-email",
        "payload": {"to": "ada@example.com"},
        "correlation_id": "corr-1",
        "enqueued_at": "2026-11-24T12:00:00.000000Z",
    }
    content.update(changes)
    return json.dumps(content)


def _without(field: str) -> str:
    content = json.loads(_body())
    del content[field]
    return json.dumps(content)


def test_decoding_keeps_none_of_the_bodies_strings_alive() -> None:
    # pydantic's default caches string values of up to 64 characters process-wide (16,384 of them):
    # a worker decoding distinct ids and payloads would keep over a megabyte of them alive.
    bodies = [
        encode(
            _envelope(
                id=f"job-{n:06d}", correlation_id=f"corr-{n:06d}", payload={"to": f"user{n:06d}@example.com"}
            )
        )
        for n in range(4_000)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        for body in bodies:
            decode(body)
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 12,000 distinct strings of ~60 bytes each: ~700 KiB if they were cached.
    assert kept < 64 * 1024


def test_an_encoded_envelope_decodes_to_an_equal_one() -> None:
    envelope = _envelope()

    assert decode(encode(envelope)) == envelope


def test_encoding_writes_the_version_marker_and_keeps_non_ascii_text() -> None:
    body = encode(_envelope())

    assert json.loads(body)["cloudjobs"] == ENVELOPE_VERSION
    assert "é" in body


def test_a_non_utc_enqueue_time_round_trips_as_the_same_instant_in_utc() -> None:
    local = datetime(2026, 11, 24, 14, 0, tzinfo=timezone(timedelta(hours=2)))

    decoded = decode(encode(_envelope(enqueued_at=local)))

    assert decoded.enqueued_at == local
    assert decoded.enqueued_at.utcoffset() == timedelta(0)


def test_optional_fields_take_their_defaults_when_absent() -> None:
    decoded = decode(_body())

    assert decoded.idempotency_key is None
    assert decoded.attempt_offset == 0
    assert decoded.redrive_count == 0


def test_a_naive_enqueue_time_is_read_as_utc() -> None:
    decoded = decode(_body(enqueued_at="2026-11-24T12:00:00"))

    assert decoded.enqueued_at == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_unknown_fields_are_ignored() -> None:
    decoded = decode(_body(added_in_a_later_release={"x": 1}, priority=3))

    assert decoded.id == "job-1"
    assert decoded.payload == {"to": "ada@example.com"}


@pytest.mark.parametrize("body", ["not json", "", "{truncated", "\x00"])
def test_a_body_that_is_not_json_is_foreign_and_keeps_its_raw_text(body: str) -> None:
    with pytest.raises(ForeignMessageError) as caught:
        decode(body)

    assert caught.value.reason == "unroutable"
    assert caught.value.content == body


@pytest.mark.parametrize(
    ("body", "content"),
    [
        ("[1, 2]", [1, 2]),
        ('"text"', "text"),
        ("42", 42),
        ("null", None),
        ('{"order": 7}', {"order": 7}),
    ],
)
def test_json_that_is_not_an_envelope_is_foreign_and_carries_the_parsed_content(
    body: str, content: JsonValue
) -> None:
    with pytest.raises(ForeignMessageError) as caught:
        decode(body)

    assert caught.value.reason == "unroutable"
    assert caught.value.content == content


def test_a_foreign_message_error_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode("plain text")


@pytest.mark.parametrize("field", ["id", "type", "payload", "correlation_id", "enqueued_at"])
def test_an_envelope_missing_a_required_field_is_malformed(field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_without(field))

    assert not isinstance(caught.value, ForeignMessageError)
    assert caught.value.reason == "malformed_envelope"
    assert field in str(caught.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"id": 5},
        {"id": ""},
        {"type": ["send-email"]},
        {"type": ""},
        {"correlation_id": None},
        {"enqueued_at": "yesterday"},
        {"idempotency_key": 12},
        {"attempt_offset": -1},
        {"attempt_offset": "many"},
        {"redrive_count": -2},
        {"cloudjobs": 0},
        {"cloudjobs": None},
        {"cloudjobs": "one"},
    ],
    ids=lambda changes: "-".join(f"{key}={value!r}" for key, value in changes.items()),
)
def test_an_envelope_with_a_field_of_the_wrong_type_or_range_is_malformed(
    changes: dict[str, JsonValue],
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_body(**changes))

    assert caught.value.reason == "malformed_envelope"


@pytest.mark.parametrize("version", [ENVELOPE_VERSION + 1, 99])
def test_an_envelope_of_a_newer_version_is_unsupported(version: int) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_body(cloudjobs=version))

    assert caught.value.reason == "unsupported_version"
    assert str(version) in str(caught.value)


def test_a_newer_version_is_unsupported_even_when_its_fields_would_not_validate() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(json.dumps({"cloudjobs": ENVELOPE_VERSION + 1, "renamed": "everything"}))

    assert caught.value.reason == "unsupported_version"


@pytest.mark.parametrize("version", ["2", 2.0, True], ids=["string", "float", "boolean"])
def test_a_version_that_is_not_a_json_integer_is_never_read_as_an_envelope(version: JsonValue) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_body(cloudjobs=version))

    assert caught.value.reason in {"malformed_envelope", "unsupported_version"}


def test_the_published_schema_file_matches_the_envelope_model() -> None:
    regenerate = (
        "regenerate it with: python -c 'import json; from cloudjobs.envelope import json_schema; "
        "print(json.dumps(json_schema(), indent=2, sort_keys=True))' "
        f"> cloudjobs/schema/{SCHEMA_FILE.name}"
    )
    assert SCHEMA_FILE.exists(), f"{SCHEMA_FILE} is missing; {regenerate}"

    published = SCHEMA_FILE.read_text(encoding="utf-8")

    assert published == json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", (
        f"{SCHEMA_FILE.name} is out of date with EnvelopeModel; {regenerate}"
    )


def test_the_schema_requires_the_version_marker_and_declares_draft_2020_12() -> None:
    schema = json_schema()

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    required = schema["required"]
    assert isinstance(required, list)
    assert {"cloudjobs", "id", "type", "payload", "correlation_id", "enqueued_at"} <= set(required)


def test_track_status_is_written_only_when_set_and_read_back() -> None:
    tracked = _envelope(track_status=True)

    assert json.loads(encode(tracked))["track_status"] is True
    assert "track_status" not in json.loads(encode(_envelope()))
    assert decode(encode(tracked)).track_status is True
    assert decode(encode(_envelope())).track_status is False


def test_a_reader_that_knows_no_track_status_ignores_it() -> None:
    # Older readers ignore unknown fields; a body without the field reads as untracked.
    body = json.loads(encode(_envelope(track_status=True)))
    body["a_field_from_the_future"] = 1

    assert decode(json.dumps(body)).track_status is True


_LONG = "x" * 3000


@pytest.mark.parametrize(
    "body",
    [
        _body(),
        _body(idempotency_key="k", attempt_offset=3, redrive_count=2, track_status=True),
        _body(due_at="2026-11-24T12:15:00Z", flow_parent="parent#1", flow_route="done", extra="kept out"),
        _body(idempotency_key=None, due_at=None, flow_parent=None, flow_route=None),
        _body(payload=None),
        _body(payload=[1, "two", {"three": 3.0}]),
        _body(enqueued_at="2026-11-24T12:00:00"),
        _body(enqueued_at="2026-11-24T14:00:00+02:00"),
        _body(enqueued_at=1764000000),
        _body(id=_LONG),
        _body(type=_LONG),
        _body(correlation_id=_LONG),
        _body(idempotency_key=_LONG),
        _body(flow_parent=_LONG),
        _body(flow_route="a-route-too-long-for-it"),
        _body(track_status="true"),
        _body(track_status=1),
        _body(attempt_offset=1.0),
        _body(attempt_offset=True),
        _body(redrive_count="2"),
        _body(due_at="soon"),
        _body(cloudjobs=True),
        _body(cloudjobs=1.5),
        _body(id=None, type=None),
        _without("payload"),
        _without("enqueued_at"),
        "[]",
        '"text"',
        "{}",
    ],
)
def test_messages_are_read_with_exactly_the_models_rules(body: str) -> None:
    # Bodies are validated into a dict derived from EnvelopeModel, not into the model itself:
    # the same fields and values, and errors with the same places and messages (what a DecodeError
    # reports), for bodies that pass and bodies that fail.
    from pydantic import ValidationError

    from cloudjobs.envelope import _ENVELOPE_FIELDS, EnvelopeModel

    def outcome(validate: object) -> object:
        try:
            result = validate(body, strict=True)  # type: ignore[operator]
        except ValidationError as exc:
            return [(error["loc"], error["msg"]) for error in exc.errors()]
        return result

    by_model = outcome(EnvelopeModel.model_validate_json)
    by_dict = outcome(_ENVELOPE_FIELDS.validate_json)
    if isinstance(by_model, EnvelopeModel):
        assert isinstance(by_dict, dict)
        assert by_dict == by_model.__dict__  # the defaults of the fields a body leaves out included
    else:
        assert by_dict == by_model
