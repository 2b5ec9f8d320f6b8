"""The handler call with nothing to wrap it (no trace started, no middleware) and with a hook around
it: the same outcomes, the same current job, whatever the handler does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from cloudjobs import CloudJobs, Completed, Job, MemoryBackend, Outcome, Retry, current_job
from cloudjobs import invocation as invocation_module
from cloudjobs.invocation import running
from cloudjobs.middleware import RunHandle
from cloudjobs.run import Run
from cloudjobs.telemetry import providers

PATHS = ["bare", "wrapped"]


class _Around(RunHandle):
    """A hook around every call, recording the job current when it is entered and left."""

    __slots__ = ("seen",)
    wraps_call = True

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def enter(self, run: Run) -> None:
        job = current_job()
        self.seen.append(f"enter {job.type if job else None}")

    def exit(self, run: Run) -> None:
        job = current_job()
        self.seen.append(f"exit {job.type if job else None}")


class _AroundMiddleware:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def start(self, run: Run) -> RunHandle:
        return _Around(self.seen)


@dataclass
class Path:
    """Which path a test takes, and how many calls went through :class:`running`."""

    is_wrapped: bool
    used: list[int]


@pytest.fixture
def wrapping(request: pytest.FixtureRequest, jobs: CloudJobs, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SDK (so no trace is started for these messages); ``wrapped`` adds a hook around the call."""
    monkeypatch.setattr(providers, "is_tracing", lambda: False)
    monkeypatch.setattr(providers, "is_metering", lambda: False)
    if request.param == "wrapped":
        jobs.add_middleware(_AroundMiddleware())
    used: list[int] = []

    class Counting(running):
        __slots__ = ()

        def __init__(self, run: Run) -> None:
            used.append(1)
            super().__init__(run)

    monkeypatch.setattr(invocation_module, "running", Counting)
    return Path(request.param == "wrapped", used)


def _run_one(jobs: CloudJobs, backend: MemoryBackend) -> Outcome:
    [delivery] = backend.receive(max_messages=1, wait=timedelta(0))
    return jobs.consumer().process(delivery)


@pytest.mark.parametrize("wrapping", PATHS, indirect=True)
@pytest.mark.parametrize(
    "raised", [None, ValueError("no"), SystemExit(3), KeyboardInterrupt(), GeneratorExit()], ids=repr
)
def test_a_sync_handler_sees_its_job_and_every_ending_becomes_an_outcome(
    jobs: CloudJobs, backend: MemoryBackend, wrapping: Path, raised: BaseException | None
) -> None:
    seen: list[object] = []

    @jobs.job("work")
    def work(payload: dict[str, int], job: Job) -> int:
        current = current_job()
        seen.append(current is job and current.type)
        if raised is not None:
            raise raised
        return payload["n"] * 2

    work.enqueue({"n": 21})

    outcome = _run_one(jobs, backend)

    assert seen == ["work"]
    assert current_job() is None  # reset after the call, however it ended
    if raised is None:
        assert outcome == Completed(result=42)
    else:
        assert isinstance(outcome, Retry)
        assert type(raised).__name__ in outcome.error
    assert len(wrapping.used) == (1 if wrapping.is_wrapped else 0)


@pytest.mark.parametrize("wrapping", PATHS, indirect=True)
def test_an_async_handler_sees_its_job_on_both_paths(
    jobs: CloudJobs, backend: MemoryBackend, wrapping: Path
) -> None:
    seen: list[object] = []

    @jobs.job("work")
    async def work(payload: dict[str, int]) -> int:
        await asyncio.sleep(0)
        job = current_job()
        seen.append(job.type if job else None)
        return payload["n"]

    work.enqueue({"n": 7})

    assert _run_one(jobs, backend) == Completed(result=7)
    assert seen == ["work"]
    assert current_job() is None
    assert wrapping.used == [1]  # an async call always goes through running()


@pytest.mark.parametrize("wrapping", ["wrapped"], indirect=True)
def test_a_hook_around_the_call_sees_the_job_current_on_entry_and_exit(
    jobs: CloudJobs, backend: MemoryBackend, wrapping: Path
) -> None:
    @jobs.job("work")
    def work(payload: dict[str, int]) -> None:
        raise SystemExit(1)

    work.enqueue({"n": 1})
    [middleware] = [m for m in jobs._middleware if isinstance(m, _AroundMiddleware)]

    assert isinstance(_run_one(jobs, backend), Retry)
    assert middleware.seen == ["enter work", "exit work"]
    assert wrapping.used == [1]
    assert current_job() is None
