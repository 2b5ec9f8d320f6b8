"""Turning what :meth:`CloudJobs.enqueue` is given, a job type and a payload, into EnqueueRequests."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from cloudjobs.definition import JobDefinition, JobHandle, as_timedelta
from cloudjobs.errors import PayloadValidationError, UnknownJobError
from cloudjobs.producer import EnqueueRequest
from cloudjobs.queues import DEFAULT_QUEUE

logger = logging.getLogger("cloudjobs.producer")

_json_adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)

_MAX_WARNED_TYPES: Final = 1_000
"""Unregistered types remembered for their one warning; past this, further ones are not warned
about, so an app that makes up type names at run time cannot grow the set without bound."""


class RequestBuilder:
    """Builds the :class:`EnqueueRequest` of each job an app enqueues: the one check on the way out.

    Every producer entry point (``enqueue``, ``enqueue_many``, their async twins, the job handle's
    methods) builds its requests here, so they refuse alike, and all before anything is sent.

    Args:
        registry: the app's job types (read on each call, so later registrations count).
        refuse_unregistered: raise :class:`UnknownJobError` for a type ``registry`` lacks; otherwise
            the first enqueue of each such type logs a warning on ``cloudjobs.producer`` (when the
            app registers any type at all: one that registers none only produces for others).
    """

    def __init__(self, registry: Mapping[str, JobDefinition], *, refuse_unregistered: bool) -> None:
        self._registry = registry
        self._refuse_unregistered = refuse_unregistered
        self._warned: set[str] = set()

    def build(
        self,
        job_type: str | JobHandle[Any, Any],
        payload: Any,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        run_at: datetime | None = None,
        track_status: bool = False,
    ) -> EnqueueRequest:
        """The request for one job, its payload serialised to JSON values.

        A payload of a registered job type (or given by its handle, even one of another app) is
        validated against its payload type; one of a type registered elsewhere is serialised as it
        is (a pydantic model, or anything JSON-serialisable). The queue is ``queue``, else the job
        type's (its registration), else the default queue; the tenant is ``tenant``, else the one
        the registration derives from the payload.

        Raises:
            UnknownJobError: the type is not registered and unregistered types are refused.
            PayloadValidationError: the payload does not fit its type, or is not JSON-serialisable.
            TypeError: the delay is neither seconds nor a timedelta.
        """
        name = job_type.name if isinstance(job_type, JobHandle) else job_type
        definition = self._registry.get(name)
        if definition is None and isinstance(job_type, JobHandle):
            # Another app's handle (a producer that registers nothing): it still knows the payload type.
            definition = job_type.definition
        if definition is not None:
            serialised = definition.serialise(payload)
            queue = queue or definition.queue
            if tenant is None:
                tenant = definition.tenant(serialised)
        else:
            self._check_unregistered(name)
            serialised = _serialise_unregistered(name, payload)
        return EnqueueRequest(
            job_type=name,
            payload=serialised,
            delay=as_timedelta(delay, name="delay") or timedelta(0),
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
            queue=queue or DEFAULT_QUEUE,
            tenant=tenant,
            run_at=run_at,
            track_status=track_status,
        )

    def _check_unregistered(self, name: str) -> None:
        if self._refuse_unregistered:
            raise UnknownJobError(job_name=name, known=sorted(self._registry))
        if not self._registry or name in self._warned or len(self._warned) >= _MAX_WARNED_TYPES:
            return
        # Two threads may both pass the test above: the warning then shows twice, which is harmless.
        self._warned.add(name)
        logger.warning(
            "sending job type %r anyway, for a consumer elsewhere (warned once per type; "
            "CloudJobs(refuse_unregistered=True) refuses such types): %s",
            name,
            UnknownJobError(job_name=name, known=sorted(self._registry)),
            extra={"job_type": name},
        )


def _serialise_unregistered(name: str, payload: Any) -> JsonValue:
    if isinstance(payload, BaseModel):
        dumped: JsonValue = payload.model_dump(mode="json")
        return dumped
    try:
        validated: JsonValue = _json_adapter.validate_python(payload)
    except ValidationError as exc:
        raise PayloadValidationError(
            f"payload of job {name!r} is not JSON-serialisable: {exc.errors()[0]['msg']}",
            job_name=name,
        ) from None
    return validated
