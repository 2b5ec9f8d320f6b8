"""The envelope: cloudjobs' only wire format.

A message body is one JSON object::

    {"cloudjobs": 1, "id": "…", "type": "send-email", "payload": {…},
     "correlation_id": "…", "enqueued_at": "2026-11-24T12:00:00.000000Z",
     "idempotency_key": null, "attempt_offset": 0, "redrive_count": 0}

``cloudjobs`` is both the marker that tells an envelope from a foreign JSON body and the format
version. Readers accept every version up to :data:`ENVELOPE_VERSION` and ignore fields they do not
know, so a field can be added without a version bump; a version is bumped only when a field changes
meaning. The JSON schema is published in ``cloudjobs/schema/envelope-v1.json`` for producers in other
languages.

A job delayed past 15 minutes also carries ``"due_at"`` (RFC 3339, UTC): a consumer that receives
it earlier hides or re-sends it without running it (see :mod:`cloudjobs.hops`). Readers before it
ignore the field, so consumers are upgraded before producers send such delays.

A job enqueued with ``track_status=True`` carries ``"track_status": true``: its consumer keeps a
status record (and result) for this job alone, as it does for every job of a type registered with
``track_status=True``. Readers before it ignore the field and keep no record, so ``jobs.result`` on
such a job times out until consumers are upgraded.

The attempt number is deliberately *not* in the body: a retry only changes the message's visibility,
so the body cannot change between attempts. The attempt is the message's receive count minus
``attempt_offset`` (set when a message is re-sent, e.g. by a DLQ redrive).

SQS message attributes mirror what tools should see without parsing the body. SQS allows ten per
message; cloudjobs uses at most six, leaving four for the sender's own:

=========================== =============================================================
``cloudjobs.type``          job type
``cloudjobs.id``            job id
``cloudjobs.correlation_id`` correlation id (the body stays the source of truth)
``traceparent``             W3C trace context
``tracestate``              W3C trace state (only when not empty)
``baggage``                 W3C baggage (only when not empty)
``cloudjobs.dead_letter``   on dead-lettered messages: JSON with reason, error, attempts, time
``cloudjobs.first_failed_at`` on redriven messages: when the job first reached the DLQ (left out
                            when the message already has ten attributes)
=========================== =============================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, NotRequired

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError
from pydantic_core import CoreConfig, SchemaValidator, core_schema
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

# Re-exported (the "as" form): it was first defined here; SQS's limits live beside the Backend protocol.
from cloudjobs.backends.base import MAX_MESSAGE_ATTRIBUTES as MAX_MESSAGE_ATTRIBUTES
from cloudjobs.errors import DecodeError
from cloudjobs.frozen import draft_of
from cloudjobs.reasons import Reason

ENVELOPE_VERSION: Final = 1
"""The newest envelope version this release writes and reads."""

TYPE_ATTRIBUTE: Final = "cloudjobs.type"
ID_ATTRIBUTE: Final = "cloudjobs.id"
CORRELATION_ATTRIBUTE: Final = "cloudjobs.correlation_id"
DEAD_LETTER_ATTRIBUTE: Final = "cloudjobs.dead_letter"
TRACE_ATTRIBUTES: Final = ("traceparent", "tracestate", "baggage")
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 1024
"""The longest idempotency key, producer-chosen or derived (a DynamoDB key holds at most 2,048 bytes)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One job as it travels through a queue.

    Attributes:
        id: the job id, unique per enqueue (kept across redrives).
        type: the name the job's handler was registered under.
        payload: the JSON payload.
        correlation_id: ties together every job started by one request.
        enqueued_at: when the job was first enqueued (UTC).
        idempotency_key: set when the producer chose one.
        attempt_offset: subtracted from the receive count to give the attempt number.
        redrive_count: how many times the job was moved back from the dead-letter queue.
        due_at: when a job delayed past 15 minutes is due (UTC; see :mod:`cloudjobs.hops`); None
            for every other job, whose message delay says when it runs.
        track_status: keep a status record (and result) for this job, whatever its type's
            registration says (``enqueue(..., track_status=True)``).
        flow_parent: the store key of the flow parent waiting for this job (a flow's child; see
            :mod:`cloudjobs.flows`).
        flow_route: set on a flow parent's two messages, ``"timeout"`` (sent at the flow's creation,
            due at its timeout) or ``"early"`` (sent when its children finished).
    """

    id: str
    type: str
    payload: JsonValue
    correlation_id: str
    enqueued_at: datetime
    idempotency_key: str | None = None
    attempt_offset: int = 0
    redrive_count: int = 0
    due_at: datetime | None = None
    track_status: bool = False
    flow_parent: str | None = None
    flow_route: str | None = None


_ENVELOPE_DRAFT = draft_of(
    Envelope,
    "id",
    "type",
    "payload",
    "correlation_id",
    "enqueued_at",
    "idempotency_key",
    "attempt_offset",
    "redrive_count",
    "due_at",
    "track_status",
    "flow_parent",
    "flow_route",
)


class EnvelopeModel(BaseModel):
    """The wire model of an envelope; source of the published JSON schema."""

    # Built when first used (the published schema): messages are read through _ENVELOPE_FIELDS.
    model_config = ConfigDict(extra="ignore", frozen=True, title="cloudjobs envelope", defer_build=True)

    cloudjobs: int = Field(ge=1, description="Envelope format version; also marks a cloudjobs message.")
    id: str = Field(min_length=1, max_length=128, description="Job id, unique per enqueue.")
    type: str = Field(min_length=1, max_length=256, description="Registered job type.")
    payload: JsonValue = Field(description="The job's JSON payload.")
    correlation_id: str = Field(min_length=1, max_length=256)
    enqueued_at: datetime = Field(description="RFC 3339 time of the first enqueue, UTC.")
    idempotency_key: str | None = Field(default=None, max_length=MAX_IDEMPOTENCY_KEY_LENGTH)
    attempt_offset: int = Field(default=0, ge=0, description="Receive count minus this is the attempt.")
    redrive_count: int = Field(default=0, ge=0, description="Moves back from the dead-letter queue.")
    due_at: datetime | None = Field(
        default=None,
        description="RFC 3339 time a job delayed past 15 minutes is due (absent otherwise); a "
        "consumer that receives it earlier hides it again without running it.",
    )
    track_status: bool = Field(
        default=False,
        description="Keep a status record (and result) for this job alone (absent when false).",
    )
    flow_parent: str | None = Field(
        default=None, max_length=2048, description="The store key of the flow parent waiting for this job."
    )
    flow_route: str | None = Field(
        default=None, max_length=16, description="Which of a flow parent's two messages this is."
    )


def _fields_of(model: type[BaseModel]) -> Any:
    """A validator of ``model``'s fields into a plain dict (its constraints and defaults, no model
    instance).

    A dict costs a third less to build per message than the model; deriving it from the model keeps
    one definition of the format (the model also gives the published schema). A field a body leaves
    out is given its default by the validator itself, as the model would give it.

    The validator caches the body's keys but not its values: pydantic's default also caches every
    string value up to 64 characters in a process-wide table of 16,384, and an envelope's values
    (ids, correlation ids, payload strings) rarely repeat, so that table only kept ~1.3 MiB of dead
    strings alive in a worker and made each decode ~10 % slower.
    """
    annotations: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        if field.is_required():
            annotations[name] = kind
        else:
            annotations[name] = NotRequired[kind]
            defaults[name] = field.default
    fields = TypedDict(f"{model.__name__}Fields", annotations)  # type: ignore[misc]
    # TypeAdapter takes no config for a TypedDict; the config is the validator's own.
    schema = TypeAdapter(fields).core_schema
    typed_dict = schema["schema"] if schema["type"] == "definitions" else schema
    for name, default in defaults.items():
        # Filled in by the validator: one dict a message, not a second merged with the defaults.
        entry = typed_dict["fields"][name]
        entry["schema"] = core_schema.with_default_schema(entry["schema"], default=default)
    return SchemaValidator(schema, CoreConfig(cache_strings="keys"))


_ENVELOPE_FIELDS = _fields_of(EnvelopeModel)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""The body's encoder, made once: ``json.dumps`` with these options builds one per call."""


class ForeignMessageError(DecodeError):
    """The body is not a cloudjobs envelope (a plain message from another sender).

    Attributes:
        content: the body parsed as JSON when it is JSON, else the raw text.
    """

    reason = Reason.UNROUTABLE

    def __init__(self, message: str, *, content: JsonValue) -> None:
        super().__init__(message)
        self.content = content


def encode(envelope: Envelope) -> str:
    """Serialise an envelope to its JSON body (compact, UTF-8 safe)."""
    fields: dict[str, object] = {
        "cloudjobs": ENVELOPE_VERSION,
        "id": envelope.id,
        "type": envelope.type,
        "payload": envelope.payload,
        "correlation_id": envelope.correlation_id,
        "enqueued_at": _format_time(envelope.enqueued_at),
        "idempotency_key": envelope.idempotency_key,
        "attempt_offset": envelope.attempt_offset,
        "redrive_count": envelope.redrive_count,
    }
    if envelope.due_at is not None:
        fields["due_at"] = _format_time(envelope.due_at)
    if envelope.track_status:
        fields["track_status"] = True
    if envelope.flow_parent is not None:
        fields["flow_parent"] = envelope.flow_parent
    if envelope.flow_route is not None:
        fields["flow_route"] = envelope.flow_route
    return _ENCODER.encode(fields)


def decode(body: str) -> Envelope:
    """Parse a message body into an envelope.

    Decoding is strict (no type coercion: ``"3"`` is not an integer) and total: any body either
    decodes or raises a :class:`DecodeError`. A cloudjobs body is parsed once.

    Raises:
        ForeignMessageError: the body is not a cloudjobs envelope (carries the parsed content).
        DecodeError: the body claims to be an envelope but is malformed (reason
            ``malformed_envelope``) or of a newer version (reason ``unsupported_version``).
    """
    try:
        # The model's fields, defaults included, validated into a dict (see _fields_of).
        fields = _ENVELOPE_FIELDS.validate_json(body, strict=True)
    except ValidationError as exc:
        raise _classify(body, exc) from None
    if fields["cloudjobs"] > ENVELOPE_VERSION:
        raise _unsupported(fields["cloudjobs"])
    enqueued_at = fields["enqueued_at"]
    if enqueued_at.tzinfo is None:
        enqueued_at = enqueued_at.replace(tzinfo=UTC)
    due_at = fields["due_at"]
    if due_at is not None and due_at.tzinfo is None:
        due_at = due_at.replace(tzinfo=UTC)
    # Envelope(...) with every field, at a fraction of the frozen __init__'s cost (cloudjobs.frozen).
    draft = object.__new__(_ENVELOPE_DRAFT)
    draft.id = fields["id"]
    draft.type = fields["type"]
    draft.payload = fields["payload"]
    draft.correlation_id = fields["correlation_id"]
    draft.enqueued_at = enqueued_at
    draft.idempotency_key = fields["idempotency_key"]
    draft.attempt_offset = fields["attempt_offset"]
    draft.redrive_count = fields["redrive_count"]
    draft.due_at = due_at
    draft.track_status = fields["track_status"]
    draft.flow_parent = fields["flow_parent"]
    draft.flow_route = fields["flow_route"]
    draft.__class__ = Envelope
    envelope: Envelope = draft
    return envelope


def _classify(body: str, error: ValidationError) -> DecodeError:
    """Why a body failed to validate: not ours, from a newer release, or malformed."""
    try:
        content: JsonValue = json.loads(body)
    except ValueError:
        return ForeignMessageError("message body is not JSON", content=body)
    if not isinstance(content, dict) or "cloudjobs" not in content:
        return ForeignMessageError("message body is not a cloudjobs envelope", content=content)
    version = content["cloudjobs"]
    if isinstance(version, int) and not isinstance(version, bool) and version > ENVELOPE_VERSION:
        return _unsupported(version)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()[:5]
    )
    return DecodeError(f"malformed envelope: {problems}", reason=Reason.MALFORMED_ENVELOPE)


def _unsupported(version: int) -> DecodeError:
    return DecodeError(
        f"envelope version {version} is newer than this release reads ({ENVELOPE_VERSION})",
        reason=Reason.UNSUPPORTED_VERSION,
    )


def envelope_attributes(envelope: Envelope) -> dict[str, str]:
    """The message attributes that mirror an envelope's fields for tools."""
    return {
        TYPE_ATTRIBUTE: envelope.type,
        ID_ATTRIBUTE: envelope.id,
        CORRELATION_ATTRIBUTE: envelope.correlation_id,
    }


def json_schema() -> dict[str, JsonValue]:
    """The envelope's JSON schema (draft 2020-12), as published in ``cloudjobs/schema``."""
    schema: dict[str, JsonValue] = EnvelopeModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://cloudjobs.dev/schema/envelope-v{ENVELOPE_VERSION}.json"
    return schema


def _format_time(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    # "2026-11-24T12:00:00.000000+00:00" less its offset: a third faster than strftime's pattern.
    return moment.isoformat(timespec="microseconds")[:26] + "Z"
