"""The schedules an app declares, with their next fires and last fire, as rows (``cloudjobs
schedules list`` and the dashboard's schedules page)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from cloudjobs.errors import ConfigurationError, IdempotencyStoreError

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs
    from cloudjobs.scheduling.definition import Schedule
    from cloudjobs.scheduling.state import ScheduleStore


def schedule_rows(
    app: CloudJobs, *, count: int, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """One row per schedule: name, expression, time zone, the next ``count`` fires (in the
    schedule's zone), the last fire (self-hosted mode; one GetItem per schedule), mode, job type,
    overlap and catch-up rules. ``warn`` gets a line when a last fire cannot be read."""
    now = app.clock.now()
    mode = app.settings.schedules_mode
    store = _store(app) if mode == "self-hosted" else None
    return [_row(schedule, store, now, count, mode, warn) for schedule in app.schedules]


def _store(app: CloudJobs) -> ScheduleStore | None:
    from cloudjobs.scheduling.state import ScheduleStore

    try:
        store = app.idempotency_store
    except ConfigurationError:
        return None
    return store if isinstance(store, ScheduleStore) else None


def _row(
    schedule: Schedule,
    store: ScheduleStore | None,
    now: datetime,
    count: int,
    mode: str,
    warn: Callable[[str], None] | None,
) -> dict[str, Any]:
    zone = ZoneInfo(schedule.tz)
    ticks = schedule.ticks()
    nexts: list[datetime] = []
    tick = ticks.after(now)
    while tick is not None and len(nexts) < count:
        nexts.append(tick.astimezone(zone))
        tick = ticks.after(tick)
    last: datetime | None = None
    last_job_id: str | None = None
    # In EventBridge mode the service keeps no last fire cloudjobs could read: it shows as unknown.
    is_unknown = store is None
    if store is not None:
        try:
            state = store.schedule_state(schedule.name)
        except IdempotencyStoreError as exc:
            if warn is not None:
                warn(f"schedule {schedule.name}: last fire unknown: {exc}")
            is_unknown = True
        else:
            if state is not None and state.last_fired_tick is not None:
                last, last_job_id = state.last_fired_tick.astimezone(zone), state.last_job_id
    return {
        "name": schedule.name,
        "expression": schedule.expression,
        "time_zone": schedule.tz,
        "next_fires": nexts,
        "last_fire": last,
        "last_fire_unknown": is_unknown,
        "last_job_id": last_job_id,
        "mode": mode,
        "job_type": schedule.job_type,
        "overlap": schedule.overlap,
        "catch_up": schedule.catch_up,
    }
