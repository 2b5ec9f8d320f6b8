"""The self-hosted scheduler: fires each schedule's ticks, exactly one fire per tick however many
scheduler processes run (``cloudjobs scheduler app:jobs``, or ``jobs.scheduler()``).

Every process looks at every schedule and tries to claim each due tick in the shared store (see
:mod:`cloudjobs.scheduling.state`); one claim wins, its holder enqueues the tick's job under a job
id and idempotency key made of the schedule's name and the tick (:meth:`Schedule.job_id`), then
settles the record. There is no leader: a process killed while idle is not missed at all, since the
others claim the next tick as usual; one killed while holding a claim is replaced when the claim's
lease lapses: within ``claim_lease`` plus the clock-skew allowance plus ``poll`` (10 + 2 + 1 s by
default), well inside the default misfire grace of 60 s, and the tick is fired under the same job
id. If the dead process had sent the job already, the job is in the queue twice with one id: an
idempotent job runs once.

Each tick fired, skipped for overlap or missed is logged on ``cloudjobs.scheduler`` and counted in
the ``cloudjobs.schedule.*`` metrics, by the process that claimed it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cloudjobs.clock import Clock, SystemClock
from cloudjobs.errors import CloudjobsError, LeaseLostError
from cloudjobs.idempotency.base import DEFAULT_CLOCK_SKEW
from cloudjobs.idempotency.status import JobStatus
from cloudjobs.scheduling.definition import Overlap, Schedule
from cloudjobs.scheduling.plan import Await, Fire, Idle, SkipMissed, next_step
from cloudjobs.scheduling.state import ScheduleState, ScheduleStore, TickClaim, TickState
from cloudjobs.scheduling.ticks import Ticks
from cloudjobs.telemetry.metrics import SCHEDULE_KEY, SchedulerMetrics, scheduler_metrics

logger = logging.getLogger("cloudjobs.scheduler")

DEFAULT_CLAIM_LEASE: Final = timedelta(seconds=10)
"""How long a claim protects a tick while its job is enqueued; a scheduler that dies holding one is
replaced this long (plus the clock-skew allowance and the poll) after its claim."""
DEFAULT_POLL: Final = timedelta(seconds=1)
"""How soon a scheduler reads a record again while another one fires a tick that a due tick follows."""
MAX_SLEEP: Final = timedelta(seconds=60)
"""The longest :meth:`Scheduler.run` sleeps between looks, whatever the next tick."""
_MAX_STEPS: Final = 1_000
"""Steps per schedule in one :meth:`Scheduler.run_pending` (ticks due at once, fired in turn)."""
_RETRY_FIRST: Final = timedelta(seconds=1)
_RETRY_MAX: Final = timedelta(seconds=30)

FireTick = Callable[[Schedule, datetime], str]
"""Enqueues a tick's job and returns its job id (the app's: :meth:`CloudJobs.scheduler`)."""
ReadStatus = Callable[[str], JobStatus | None]
"""Reads a job's status by its id (the app's ``jobs.status``)."""


@dataclass(frozen=True, slots=True)
class FiredTick:
    """A tick whose job was enqueued (by this scheduler)."""

    schedule: str
    tick: datetime
    job_id: str


@dataclass(frozen=True, slots=True)
class SkippedTick:
    """A tick not fired: its previous run (``previous_job_id``) was still pending or running."""

    schedule: str
    tick: datetime
    previous_job_id: str


@dataclass(frozen=True, slots=True)
class SchedulerReport:
    """What one :meth:`Scheduler.run_pending` did.

    Attributes:
        fired: ticks whose job it enqueued.
        skipped_overlap: ticks it skipped under ``overlap="skip"``.
        missed: ticks it found later than their misfire grace and did not fire.
        failed: ticks whose enqueue failed (claimed again later, within the grace).
        next_wakeup: when a tick may next be due (None: no schedule fires again).
    """

    fired: tuple[FiredTick, ...] = ()
    skipped_overlap: tuple[SkippedTick, ...] = ()
    missed: int = 0
    failed: int = 0
    next_wakeup: datetime | None = None


@dataclass
class _Entry:
    """One schedule as this scheduler follows it: its record as last seen, and when to retry."""

    schedule: Schedule
    ticks: Ticks
    state: ScheduleState | None = None
    needs_read: bool = True
    is_fresh: bool = False
    retry_at: datetime | None = None
    failures: int = 0


@dataclass
class _Findings:
    fired: list[FiredTick] = field(default_factory=list)
    skipped: list[SkippedTick] = field(default_factory=list)
    missed: int = 0
    failed: int = 0


class Scheduler:
    """Fires the ticks of a set of schedules through a shared :class:`ScheduleStore`.

    Call :meth:`run_pending` to fire whatever is due now (tests pass ``now``), or :meth:`run` to loop
    until :meth:`stop`. Build it with :meth:`CloudJobs.scheduler <cloudjobs.app.CloudJobs.scheduler>`.

    Args:
        schedules: the schedules to fire.
        store: where the schedules' records live (shared by every scheduler process).
        fire: enqueues a tick's job and returns its job id.
        status: reads a job's status (``overlap="skip"`` reads the previous run's).
        clock: the time source.
        claim_lease: how long a claim protects a tick while its job is enqueued.
        clock_skew: how long after its end a claim's lease counts as lapsed.
        poll: how soon to look again while another scheduler fires a tick that a due one follows.
        owner: this scheduler's name in the records (default ``host:pid``).
        metrics: the instruments to record on (None: none).
    """

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        store: ScheduleStore,
        fire: FireTick,
        status: ReadStatus,
        clock: Clock | None = None,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        poll: timedelta = DEFAULT_POLL,
        owner: str | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        if claim_lease <= timedelta(0):
            raise ValueError("claim_lease must be positive")
        self._entries = [_Entry(schedule, schedule.ticks()) for schedule in schedules]
        self._store = store
        self._fire_tick = fire
        self._status = status
        self._clock: Clock = clock or SystemClock()
        self._lease = claim_lease
        self._clock_skew = clock_skew
        self._poll = poll
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._metrics = metrics
        self._stopping = threading.Event()
        self._counts: Counter[str] = Counter()
        self.started = threading.Event()
        """Set once :meth:`run` has begun its loop."""

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules this scheduler fires."""
        return [entry.schedule for entry in self._entries]

    @property
    def takeover_time(self) -> timedelta:
        """How long after its claim a tick held by a dead scheduler is claimed again, at most."""
        return self._lease + self._clock_skew + self._poll

    @property
    def counts(self) -> dict[str, int]:
        """Ticks this scheduler fired, skipped for overlap, missed and failed, since it was built."""
        return {name: self._counts[name] for name in ("fired", "skipped_overlap", "missed", "failed")}

    def run_pending(self, now: datetime | None = None) -> SchedulerReport:
        """Fire every tick due at ``now`` (default: the clock's time), schedule by schedule.

        A schedule whose store cannot be reached (or that fails in any other way) is logged and
        tried again after a backoff (1 s, doubling up to 30 s); the others go on.
        """
        moment = now if now is not None else self._clock.now()
        findings = _Findings()
        wakeups: list[datetime] = []
        for entry in self._entries:
            try:
                wake = self._advance(entry, moment, findings)
            except Exception as exc:
                # One schedule's failure must not stop the others, nor the scheduler.
                logger.warning(
                    "schedule %s: %s: %s; trying again shortly",
                    entry.schedule.name,
                    type(exc).__name__,
                    exc,
                    exc_info=not isinstance(exc, CloudjobsError),
                    extra={"schedule": entry.schedule.name},
                )
                entry.needs_read = True
                wake = self._back_off(entry, moment)
            if wake is not None:
                wakeups.append(wake)
        self._counts.update(
            fired=len(findings.fired),
            skipped_overlap=len(findings.skipped),
            missed=findings.missed,
            failed=findings.failed,
        )
        return SchedulerReport(
            fired=tuple(findings.fired),
            skipped_overlap=tuple(findings.skipped),
            missed=findings.missed,
            failed=findings.failed,
            next_wakeup=min(wakeups) if wakeups else None,
        )

    def run(self) -> None:
        """Fire ticks as they come due until :meth:`stop`: look, sleep until the next tick (at most
        a minute), look again. A tick being fired when ``stop`` is called is finished first."""
        names = ", ".join(f"{entry.schedule.name} ({entry.schedule.expression})" for entry in self._entries)
        logger.info("scheduler %s started: %s", self._owner, names or "no schedules")
        self.started.set()
        while not self._stopping.is_set():
            report = self.run_pending()
            now = self._clock.now()
            until = report.next_wakeup if report.next_wakeup is not None else now + MAX_SLEEP
            pause = min(max(until - now, timedelta(0)), MAX_SLEEP)
            self._stopping.wait(pause.total_seconds())
        logger.info("scheduler %s stopped", self._owner)

    def stop(self) -> None:
        """Ask :meth:`run` to return (after the tick it is firing, if any)."""
        self._stopping.set()

    # -- one schedule -------------------------------------------------------------------------------

    def _advance(self, entry: _Entry, now: datetime, findings: _Findings) -> datetime | None:
        """Take the schedule's steps due at ``now``; returns when to look at it again."""
        if entry.retry_at is not None and entry.retry_at > now:
            return entry.retry_at
        entry.retry_at = None
        entry.is_fresh = False
        if entry.needs_read:
            self._read(entry)
        for _ in range(_MAX_STEPS):
            step = next_step(
                entry.schedule,
                entry.ticks,
                entry.state,
                now=now,
                clock_skew=self._clock_skew,
                poll=self._poll,
            )
            match step:
                case Idle(until):
                    return until
                case Await(until):
                    if not entry.is_fresh:
                        # What we hold may be old (the claim we lost): read before waiting on it.
                        self._read(entry)
                        continue
                    entry.needs_read = True
                    return until
                case Fire():
                    self._fire(entry, step, now, findings)
                    if entry.retry_at is not None:
                        return entry.retry_at
                case SkipMissed():
                    self._skip_missed(entry, step, now, findings)
        return now

    def _read(self, entry: _Entry) -> None:
        entry.state = self._store.schedule_state(entry.schedule.name)
        entry.needs_read = False
        entry.is_fresh = True

    def _claim(self, entry: _Entry, tick: datetime) -> TickClaim | None:
        """Claim ``tick``; None (and the record as it now is) when another scheduler was first."""
        claim = self._store.claim_tick(
            entry.schedule.name, tick, seen=entry.state, lease=self._lease, owner=self._owner
        )
        if isinstance(claim, ScheduleState):
            entry.state, entry.is_fresh = claim, True
            return None
        return claim

    def _fire(self, entry: _Entry, step: Fire, now: datetime, findings: _Findings) -> None:
        schedule = entry.schedule
        claim = self._claim(entry, step.tick)
        if claim is None:
            return
        if step.missed:
            self._count_missed(schedule, step.missed, step.tick, findings, fired_latest=True)
        try:
            previous = self._running_previous(schedule, claim)
            if previous is not None:
                self._settle(entry, claim, TickState.SKIPPED)
                findings.skipped.append(SkippedTick(schedule.name, step.tick, previous.job_id))
                self._record("skipped_overlap", schedule)
                logger.info(
                    "schedule %s: skipped tick %s: its previous run %s is still %s",
                    schedule.name,
                    _text(step.tick),
                    previous.job_id,
                    previous.state.value,
                    extra={"schedule": schedule.name, "tick": _text(step.tick), "job_id": previous.job_id},
                )
                return
            job_id = self._fire_tick(schedule, step.tick)
        except Exception as exc:
            # Nothing was enqueued (or it is unknown): the tick is claimed again, by any scheduler,
            # after a backoff, and fired under the same job id while it is within the grace.
            findings.failed += 1
            logger.error(
                "schedule %s: firing tick %s failed: %s",
                schedule.name,
                _text(step.tick),
                exc,
                exc_info=not isinstance(exc, CloudjobsError),
                extra={"schedule": schedule.name, "tick": _text(step.tick)},
            )
            try:
                self._settle(entry, claim, TickState.FAILED)
            except CloudjobsError:
                entry.needs_read = True  # the lease lapses by itself
            self._back_off(entry, now)
            return
        entry.failures, entry.retry_at = 0, None
        self._settle(entry, claim, TickState.FIRED, job_id=job_id)
        findings.fired.append(FiredTick(schedule.name, step.tick, job_id))
        lateness = max(now - step.tick, timedelta(0))
        self._record("fired", schedule, lateness=lateness)
        logger.info(
            "schedule %s: fired tick %s as job %s (%.1f s after its time)",
            schedule.name,
            _text(step.tick),
            job_id,
            lateness.total_seconds(),
            extra={"schedule": schedule.name, "tick": _text(step.tick), "job_id": job_id},
        )

    def _skip_missed(self, entry: _Entry, step: SkipMissed, now: datetime, findings: _Findings) -> None:
        claim = self._claim(entry, step.tick)
        if claim is None:
            return
        self._settle(entry, claim, TickState.MISSED)
        self._count_missed(entry.schedule, step.count, step.first, findings, last=step.tick)

    def _settle(
        self, entry: _Entry, claim: TickClaim, outcome: TickState, *, job_id: str | None = None
    ) -> None:
        try:
            entry.state = self._store.settle_tick(claim, outcome, job_id=job_id)
            entry.is_fresh = True
        except LeaseLostError:
            # Our lease lapsed and another scheduler claimed the tick again: it fires it (same job id).
            logger.warning(
                "schedule %s: lost the claim on tick %s before settling it (%s): another scheduler "
                "took it over; its job may have been sent twice, with one job id",
                claim.schedule,
                _text(claim.tick),
                outcome.value,
                extra={"schedule": claim.schedule, "tick": _text(claim.tick)},
            )
            self._read(entry)

    def _running_previous(self, schedule: Schedule, claim: TickClaim) -> JobStatus | None:
        """The previous run's status while it is still pending or running (``overlap="skip"``),
        else None. A run whose record cannot be found does not hold the tick back."""
        previous = claim.previous
        if schedule.overlap is not Overlap.SKIP or previous is None or previous.last_job_id is None:
            return None
        status = self._status(previous.last_job_id)
        return status if status is not None and not status.is_finished else None

    def _count_missed(
        self,
        schedule: Schedule,
        count: int,
        first: datetime,
        findings: _Findings,
        *,
        last: datetime | None = None,
        fired_latest: bool = False,
    ) -> None:
        findings.missed += count
        self._record("missed", schedule, count=count)
        if fired_latest:
            message = "schedule %s: %d ticks before %s were later than the misfire grace of %s s: "
            message += "firing the latest once (catch_up=once)"
            logger.warning(
                message,
                schedule.name,
                count,
                _text(first),
                schedule.misfire_grace.total_seconds(),
                extra={"schedule": schedule.name},
            )
            return
        logger.warning(
            "schedule %s: missed %d ticks from %s to %s, later than the misfire grace of %s s "
            "(catch_up=skip)",
            schedule.name,
            count,
            _text(first),
            _text(last or first),
            schedule.misfire_grace.total_seconds(),
            extra={"schedule": schedule.name},
        )

    def _record(
        self, kind: str, schedule: Schedule, *, count: int = 1, lateness: timedelta | None = None
    ) -> None:
        if self._metrics is None:
            return
        attributes = {SCHEDULE_KEY: schedule.name}
        if kind == "fired":
            self._metrics.fired.add(count, attributes)
            if lateness is not None:
                self._metrics.lateness.record(lateness.total_seconds(), attributes)
        elif kind == "skipped_overlap":
            self._metrics.skipped_overlap.add(count, attributes)
        else:
            self._metrics.missed.add(count, attributes)

    def _back_off(self, entry: _Entry, now: datetime) -> datetime:
        delay = min(_RETRY_FIRST * 2**entry.failures, _RETRY_MAX)
        entry.failures += 1
        entry.retry_at = now + delay
        return entry.retry_at


def default_metrics(*, is_enabled: bool) -> SchedulerMetrics | None:
    """The process's scheduler instruments, or None when telemetry is off."""
    return scheduler_metrics() if is_enabled else None


def _text(tick: datetime) -> str:
    return tick.isoformat()
