"""An app's schedules: declared by ``jobs.schedule(...)``, checked again when a scheduler starts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from cloudjobs.definition import JobDefinition
from cloudjobs.errors import InvalidScheduleError, PayloadValidationError
from cloudjobs.scheduling.definition import CatchUp, Overlap, Schedule, define_schedule

_json_adapter: TypeAdapter[JsonValue] = TypeAdapter(JsonValue)


class ScheduleRegistry:
    """The schedules of one app, by name.

    Args:
        jobs: the app's job types (read on each call, so later registrations count).
    """

    def __init__(self, jobs: Mapping[str, JobDefinition]) -> None:
        self._jobs = jobs
        self._schedules: dict[str, Schedule] = {}

    def declare(
        self,
        name: str,
        *,
        job_type: str,
        payload: Any,
        cron: str | None,
        every: timedelta | float | None,
        tz: str | None,
        overlap: Overlap | Literal["allow", "skip"],
        catch_up: CatchUp | Literal["skip", "once"],
        misfire_grace: timedelta | float,
    ) -> Schedule:
        """Check and add a schedule (see :meth:`CloudJobs.schedule <cloudjobs.app.CloudJobs.schedule>`).

        Raises:
            InvalidScheduleError: the name is taken, the payload does not fit the job type, or the
                schedule itself is malformed (see :func:`define_schedule`).
        """
        if name in self._schedules:
            raise InvalidScheduleError("a schedule of this name is declared already", schedule=name)
        schedule = define_schedule(
            name,
            job_type=job_type,
            payload=self._serialise(name, job_type, payload),
            cron=cron,
            every=every,
            tz=tz,
            overlap=overlap,
            catch_up=catch_up,
            misfire_grace=misfire_grace,
        )
        self._schedules[name] = schedule
        return schedule

    def all(self) -> list[Schedule]:
        """Every schedule, in the order declared."""
        return list(self._schedules.values())

    def checked(self) -> list[Schedule]:
        """Every schedule, checked against the job types registered by now (a scheduler starts).

        Raises:
            InvalidScheduleError: a payload does not fit its job type (registered after the
                schedule was declared), or ``overlap="skip"`` names a job type that this app does
                not register with a status record (``track_status=True`` or ``idempotent=True``):
                the previous run's status is read from that record.
        """
        for schedule in self._schedules.values():
            self._serialise(schedule.name, schedule.job_type, schedule.payload)
            definition = self._jobs.get(schedule.job_type)
            if schedule.overlap is Overlap.SKIP and (definition is None or not definition.has_record):
                raise InvalidScheduleError(
                    f"overlap='skip' reads the previous run's status record: register job type "
                    f"{schedule.job_type!r} in this app with track_status=True or idempotent=True",
                    schedule=schedule.name,
                    setting="overlap",
                )
        return self.all()

    def _serialise(self, name: str, job_type: str, payload: Any) -> JsonValue:
        definition = self._jobs.get(job_type)
        try:
            if definition is not None:
                return definition.serialise(payload)
            if isinstance(payload, BaseModel):
                dumped: JsonValue = payload.model_dump(mode="json")
                return dumped
            validated: JsonValue = _json_adapter.validate_python(payload)
            return validated
        except PayloadValidationError as exc:
            raise InvalidScheduleError(str(exc), schedule=name, setting="payload") from None
        except ValidationError as exc:
            raise InvalidScheduleError(
                f"payload is not JSON-serialisable: {exc.errors()[0]['msg']}",
                schedule=name,
                setting="payload",
            ) from None
