"""JobDefinition (what ``@jobs.job`` registers) and JobHandle (what it returns)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from cloudjobs.errors import ConfigurationError, PayloadValidationError
from cloudjobs.groups import TenantKey, tenant_function
from cloudjobs.job import Job
from cloudjobs.retry import RetryPolicy

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs
    from cloudjobs.limits.spec import JobLimits

P = TypeVar("P")
R = TypeVar("R")

IdempotencyKey = Callable[[Any], object] | str | Sequence[str]
"""How ``@jobs.job(idempotency_key=...)`` derives a key: a function of the payload, a field name, or
several field names (their values joined with ``:``)."""

Handler = Callable[[P, Job], R | Awaitable[R]] | Callable[[P], R | Awaitable[R]]
"""A job handler: ``(payload)`` or ``(payload, job)``, plain or ``async``."""


def as_timedelta(value: timedelta | float | None, *, name: str) -> timedelta | None:
    """Accept seconds or a timedelta (the API's rule for durations)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} takes seconds or a timedelta, not {type(value).__name__}")
    return timedelta(seconds=value)


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """A registered job type.

    Attributes:
        name: the job type.
        function: the handler.
        payload_type: the annotation of the handler's first parameter (None: any JSON).
        takes_job: whether the handler takes the :class:`Job` as a second argument.
        is_async: whether the handler is a coroutine function.
        max_attempts: attempts in all (None: the settings' default).
        timeout: the handler's time limit (None: the settings' default).
        retry: a retry policy replacing the settings' backoff (None: from settings).
        idempotent: run at most once per idempotency key to completion (effectively once).
        key_function: derives the idempotency key from the validated payload (None: the job id).
        track_status: keep a status record readable with ``jobs.status(job_id)`` (idempotent jobs
            always have one).
        queue: the app's queue jobs of this type go to (None: the default queue).
        tenant_of: derives the tenant from the payload (None: only ``enqueue(..., tenant=)``).
        tenant_from_model: ``tenant_of`` takes the validated payload (a function); otherwise the
            payload's JSON (a field name).
        limits: the job type's rate and concurrency limits (None: none; see :mod:`cloudjobs.limits`).
    """

    name: str
    function: Callable[..., Any]
    payload_type: Any
    takes_job: bool
    is_async: bool
    max_attempts: int | None
    timeout: timedelta | None
    retry: RetryPolicy | None
    idempotent: bool = False
    key_function: Callable[[Any], object] | None = None
    track_status: bool = False
    queue: str | None = None
    tenant_of: Callable[[Any], str | None] | None = None
    tenant_from_model: bool = False
    limits: JobLimits | None = None

    @property
    def validates_payload(self) -> bool:
        """False when :meth:`validate` hands a payload back as it is: no annotation, ``Any`` or
        ``object`` (pydantic validates the last two alike, to the payload itself)."""
        payload_type = self.payload_type
        return not (payload_type is None or payload_type is Any or payload_type is object)

    @property
    def has_record(self) -> bool:
        """True when runs of this job keep an idempotency or status record."""
        return self.idempotent or self.track_status

    def idempotency_key_of(self, *, job_id: str, producer_key: str | None, payload: Any) -> str | None:
        """The job's idempotency key: the producer's, else derived from the payload, else the job id
        (None for a job that keeps no record and got no key from its producer)."""
        if producer_key is not None:
            return producer_key
        if self.key_function is not None:
            return str(self.key_function(payload))
        return job_id if self.has_record else None

    @classmethod
    def from_function(
        cls,
        name: str,
        function: Callable[..., Any],
        *,
        max_attempts: int | None,
        timeout: timedelta | None,
        retry: RetryPolicy | None,
        idempotent: bool = False,
        idempotency_key: IdempotencyKey | None = None,
        track_status: bool = False,
        queue: str | None = None,
        tenant: TenantKey | None = None,
    ) -> JobDefinition:
        """Inspect a handler's signature: its payload annotation and whether it takes the Job.

        ``idempotency_key`` (a function of the payload, or the payload's field names) makes the job
        idempotent. ``tenant`` is a field name or a function of the payload.

        Raises:
            ConfigurationError: the signature does not fit, or an option is out of range.
        """
        parameters = list(inspect.signature(function).parameters.values())
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not 1 <= len(positional) <= 2:
            raise ConfigurationError(f"handler of job {name!r} must take (payload) or (payload, job)")
        try:
            hints = typing.get_type_hints(function)
        except (NameError, TypeError):
            hints = {}
        payload_type = hints.get(positional[0].name)
        if max_attempts is not None and max_attempts < 1:
            raise ConfigurationError(f"job {name!r}: max_attempts must be at least 1")
        if timeout is not None and timeout <= timedelta(0):
            raise ConfigurationError(f"job {name!r}: timeout must be positive")
        return cls(
            name=name,
            function=function,
            payload_type=payload_type,
            takes_job=len(positional) == 2,
            is_async=inspect.iscoroutinefunction(function),
            max_attempts=max_attempts,
            timeout=timeout,
            retry=retry,
            idempotent=idempotent or idempotency_key is not None,
            key_function=_key_function(name, idempotency_key),
            track_status=track_status,
            queue=queue,
            tenant_of=tenant_function(name, tenant),
            tenant_from_model=callable(tenant),
        )

    def tenant(self, payload: JsonValue) -> str | None:
        """The tenant derived from a serialised payload (None without ``tenant=`` or a value).

        Raises:
            PayloadValidationError: the payload fails the schema (a function of the payload only).
        """
        if self.tenant_of is None:
            return None
        return self.tenant_of(self.validate(payload) if self.tenant_from_model else payload)

    def validate(self, payload: JsonValue) -> Any:
        """Turn a JSON payload into the handler's payload type.

        Raises:
            PayloadValidationError: the payload does not fit the handler's annotation.
        """
        if not self.validates_payload:
            return payload
        payload_type = self.payload_type
        try:
            # The adapter's compiled validator itself, as TypeAdapter.validate_python calls it with
            # no options (whose keyword defaults cost more than the call).
            return _adapter(payload_type).validator.validate_python(payload)
        except ValidationError as exc:
            raise PayloadValidationError(
                f"payload of job {self.name!r} fails its schema: {_summary(exc)}", job_name=self.name
            ) from None

    def serialise(self, payload: Any) -> JsonValue:
        """Turn a payload object into JSON, through the handler's annotation when it has one.

        What this returns is what the consumer will validate, so a payload the consumer would refuse
        is refused here instead:

        - for a job typed by a pydantic model, an instance of that model (or of a subclass) is
          dumped as that model, without validating it again (a subclass's own fields stay home);
          a model of any other class is refused, even one whose fields happen to fit;
        - for any other payload type, a model is dumped to JSON and validated as the consumer will
          validate it; anything else (a dict...) is validated against the type, as always.

        Raises:
            PayloadValidationError: the payload cannot be represented as the job's payload type.
        """
        payload_type = self.payload_type
        try:
            if isinstance(payload, BaseModel):
                if payload_type is None or payload_type is Any:
                    dumped: JsonValue = payload.model_dump(mode="json")
                    return dumped
                if isinstance(payload_type, type) and issubclass(payload_type, BaseModel):
                    if not isinstance(payload, payload_type):
                        raise PayloadValidationError(
                            f"payload of job {self.name!r} must be {payload_type.__qualname__} "
                            f"(or a subclass), not {type(payload).__qualname__}",
                            job_name=self.name,
                        )
                    # A constructed model was validated when it was built: dumping is enough.
                    as_declared: JsonValue = _adapter(payload_type).dump_python(payload, mode="json")
                    return as_declared
                payload = payload.model_dump(mode="json")
            if payload_type is None or payload_type is Any:
                validated: JsonValue = _adapter(JsonValue).validate_python(payload)
                return validated
            adapter = _adapter(payload_type)
            result: JsonValue = adapter.dump_python(adapter.validate_python(payload), mode="json")
            return result
        except ValidationError as exc:
            raise PayloadValidationError(
                f"payload of job {self.name!r} fails its schema: {_summary(exc)}", job_name=self.name
            ) from None


def _key_function(name: str, key: IdempotencyKey | None) -> Callable[[Any], object] | None:
    if key is None or callable(key):
        return key
    fields = (key,) if isinstance(key, str) else tuple(key)
    if not fields or not all(isinstance(field, str) and field for field in fields):
        raise ConfigurationError(f"job {name!r}: idempotency_key takes a function or field names")

    def from_fields(payload: Any) -> str:
        values = [
            payload[field] if isinstance(payload, dict) else getattr(payload, field) for field in fields
        ]
        return ":".join(str(value) for value in values)

    return from_fields


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    # Building a TypeAdapter compiles a validator: do it once per type, not once per message.
    adapter = _adapters.get(annotation)
    if adapter is None:
        adapter = _adapters[annotation] = TypeAdapter(annotation)
    return adapter


def _summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}"
        for error in exc.errors()[:5]
    )


class JobHandle(Generic[P, R]):
    """What ``@jobs.job(...)`` returns: the handler, still callable, plus typed enqueue methods."""

    def __init__(self, app: CloudJobs, definition: JobDefinition) -> None:
        self._app = app
        self.definition = definition
        self.name = definition.name
        self.__wrapped__ = definition.function
        self.__doc__ = definition.function.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler directly (no queue involved)."""
        return self.definition.function(*args, **kwargs)

    def enqueue(
        self,
        payload: P,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        run_at: datetime | None = None,
        unique_for: timedelta | float | None = None,
        unique_key: str | None = None,
        unique_until: Literal["window", "finished"] | None = None,
        track_status: bool = False,
    ) -> str:
        """Enqueue one job of this type; returns its job id. See :meth:`CloudJobs.enqueue`."""
        return self._app.enqueue(
            self.name,
            payload,
            delay=delay,
            idempotency_key=idempotency_key,
            group_id=group_id,
            deduplication_id=deduplication_id,
            queue=queue,
            tenant=tenant,
            run_at=run_at,
            unique_for=unique_for,
            unique_key=unique_key,
            unique_until=unique_until,
            track_status=track_status,
        )

    def enqueue_many(self, payloads: Iterable[P], *, delay: timedelta | float | None = None) -> list[str]:
        """Enqueue many jobs of this type in batches; returns the job ids in order."""
        return self._app.enqueue_many([(self.name, payload) for payload in payloads], delay=delay)

    def __repr__(self) -> str:
        return f"<JobHandle {self.name!r}>"
