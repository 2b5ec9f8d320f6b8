"""Turning what :meth:`CloudJobs.enqueue` is given, a job type and a payload, into EnqueueRequests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from cloudjobs.definition import JobDefinition, JobHandle, as_timedelta
from cloudjobs.errors import PayloadValidationError
from cloudjobs.producer import EnqueueRequest

_json_adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


def build_request(
    registry: Mapping[str, JobDefinition],
    job_type: str | JobHandle[Any, Any],
    payload: Any,
    *,
    delay: timedelta | float | None = None,
    idempotency_key: str | None = None,
    group_id: str | None = None,
    deduplication_id: str | None = None,
) -> EnqueueRequest:
    """The request for one job, its payload serialised to JSON values.

    A payload of a job type in ``registry`` (or given by its handle, even one of another app) is
    validated against its payload type; one of a type registered elsewhere is serialised as it is
    (a pydantic model, or anything JSON-serialisable).

    Raises:
        PayloadValidationError: the payload does not fit its type, or is not JSON-serialisable.
        TypeError: the delay is neither seconds nor a timedelta.
    """
    name = job_type.name if isinstance(job_type, JobHandle) else job_type
    definition = registry.get(name)
    if definition is None and isinstance(job_type, JobHandle):
        # Another app's handle (a producer that registers nothing): it still knows the payload type.
        definition = job_type.definition
    if definition is not None:
        serialised = definition.serialise(payload)
    elif isinstance(payload, BaseModel):
        serialised = payload.model_dump(mode="json")
    else:
        try:
            serialised = _json_adapter.validate_python(payload)
        except ValidationError as exc:
            raise PayloadValidationError(
                f"payload of job {name!r} is not JSON-serialisable: {exc.errors()[0]['msg']}",
                job_name=name,
            ) from None
    return EnqueueRequest(
        job_type=name,
        payload=serialised,
        delay=as_timedelta(delay, name="delay") or timedelta(0),
        idempotency_key=idempotency_key,
        group_id=group_id,
        deduplication_id=deduplication_id,
    )
