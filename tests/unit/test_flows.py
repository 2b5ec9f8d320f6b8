"""Flows on the memory backend and store: order, results, failures, timeouts, nesting, duplicates."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cloudjobs import (
    CloudJobs,
    ConfigurationError,
    Deferred,
    FlowTooLargeError,
    InvalidFlowError,
    Job,
    JobState,
    ManualClock,
    MemoryBackend,
    MemoryIdempotencyStore,
    PermanentError,
    Settings,
)
from cloudjobs.flows import MAX_FLOW_CHILDREN, subflow


class _Log:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.parent_results: list[dict[str, object]] = []


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock)


@pytest.fixture
def log() -> _Log:
    return _Log()


@pytest.fixture
def app(backend: MemoryBackend, clock: ManualClock, store: MemoryIdempotencyStore, log: _Log) -> CloudJobs:
    jobs = CloudJobs(
        settings=Settings(_env_file=None),
        backend=backend,
        clock=clock,
        random=lambda: 0.5,
        idempotency_store=store,
    )

    @jobs.job("fetch", max_attempts=2)
    def fetch(payload: dict[str, int], job: Job) -> dict[str, int]:
        log.events.append(f"fetch {payload['n']}")
        if payload.get("fail"):
            raise PermanentError("the source is gone")
        return {"n": payload["n"] * 10}

    @jobs.job("report")
    def report(payload: dict[str, str], job: Job) -> int:
        results = job.child_results()
        log.events.append(f"report {payload['name']}")
        log.parent_results.append(dict(results))
        return len(results)

    return jobs


def _dead_letter_reasons(backend: MemoryBackend) -> list[str]:
    assert backend.dead_letter_queue is not None
    return [
        json.loads(message.attributes["cloudjobs.dead_letter"])["reason"]
        for message in backend.dead_letter_queue.messages()
    ]


def test_parent_runs_once_after_the_last_child_with_every_result(app: CloudJobs, log: _Log) -> None:
    flow = app.flow(("report", {"name": "r"}), children=[("fetch", {"n": n}) for n in range(50)])

    app.drain()

    assert log.events.count("report r") == 1
    assert log.events[-1] == "report r"
    assert log.parent_results == [{child_id: {"n": n * 10} for n, child_id in enumerate(flow.child_ids)}]
    status = app.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.SUCCEEDED
    assert status.result == 50


def test_parent_waits_for_children_and_status_counts_them(app: CloudJobs, backend: MemoryBackend) -> None:
    flow = app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1}), ("fetch", {"n": 2})])
    status = app.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.WAITING_CHILDREN
    assert status.children is not None
    assert (status.children.total, status.children.remaining) == (2, 2)

    consumer = app.consumer()
    [first] = backend.receive(max_messages=1, wait=timedelta(0))
    consumer.process(first)
    backend.delete([first.receipt])

    status = app.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.WAITING_CHILDREN
    assert status.children is not None
    assert (status.children.succeeded, status.children.remaining) == (1, 1)


def test_failed_child_with_fail_rule_dead_letters_the_parent_without_running_it(
    app: CloudJobs, backend: MemoryBackend, log: _Log
) -> None:
    children = [("fetch", {"n": n, "fail": int(n == 3)}) for n in range(6)]
    flow = app.flow(("report", {"name": "r"}), children=children, on_child_failure="fail")

    app.drain()

    assert "report r" not in log.events
    assert _dead_letter_reasons(backend).count("child_failed") == 1
    status = app.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.FAILED
    assert status.error is not None
    assert "1 of 6 children" in status.error


def test_failed_child_with_ignore_rule_runs_the_parent_with_the_other_results(
    app: CloudJobs, backend: MemoryBackend, log: _Log
) -> None:
    children = [("fetch", {"n": n, "fail": int(n == 0)}) for n in range(50)]
    flow = app.flow(("report", {"name": "r"}), children=children, on_child_failure="ignore")

    app.drain()

    assert log.events.count("report r") == 1
    [results] = log.parent_results
    assert len(results) == 49
    assert flow.child_ids[0] not in results
    assert "child_failed" not in _dead_letter_reasons(backend)


def test_child_lost_to_the_queue_ends_the_wait_at_the_timeout(
    app: CloudJobs, backend: MemoryBackend, log: _Log
) -> None:
    flow = app.flow(
        ("report", {"name": "r"}),
        children=[("fetch", {"n": 1}), ("fetch", {"n": 2})],
        on_child_failure="ignore",
        timeout=600,
    )
    # One child's message vanishes as SQS's own redrive would take it: nothing records it.
    [lost] = [m for m in backend.messages() if json.loads(m.body)["id"] == flow.child_ids[1]]
    received = backend.receive(max_messages=10, wait=timedelta(0))
    backend.delete([d.receipt for d in received if d.message_id == lost.message_id])
    backend.advance(timedelta(seconds=60))

    app.drain(skip_delays=False)
    assert "report r" not in log.events
    status = app.status(flow.parent_id)
    assert status is not None
    assert status.state is JobState.WAITING_CHILDREN

    app.drain()
    assert log.events.count("report r") == 1
    assert log.parent_results == [{flow.child_ids[0]: {"n": 10}}]


def test_timeout_with_fail_rule_dead_letters_the_parent(
    app: CloudJobs, backend: MemoryBackend, log: _Log
) -> None:
    flow = app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1})], timeout=600)
    [delivery] = backend.receive(max_messages=10, wait=timedelta(0))
    backend.delete([delivery.receipt])

    app.drain()

    assert "report r" not in log.events
    assert _dead_letter_reasons(backend) == ["child_failed"]
    status = app.status(flow.parent_id)
    assert status is not None
    assert status.error is not None
    assert "timed out" in status.error


def test_child_completing_twice_counts_once(app: CloudJobs, backend: MemoryBackend, log: _Log) -> None:
    flow = app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1}), ("fetch", {"n": 2})])
    consumer = app.consumer()
    [first] = [
        d
        for d in backend.receive(max_messages=10, wait=timedelta(0))
        if d.body and flow.child_ids[0] in d.body
    ]
    # The same delivery processed twice (a redelivery after a crash before the delete).
    consumer.process(first)
    consumer.process(first)

    status = app.status(flow.parent_id)
    assert status is not None
    assert status.children is not None
    assert (status.children.succeeded, status.children.remaining) == (1, 1)
    assert status.state is JobState.WAITING_CHILDREN


def test_redelivered_last_child_sends_the_parent_again_and_it_runs_once(
    app: CloudJobs, backend: MemoryBackend, log: _Log
) -> None:
    flow = app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1})])
    consumer = app.consumer()
    [child] = [d for d in backend.receive(max_messages=10, wait=timedelta(0)) if flow.child_ids[0] in d.body]
    consumer.process(child)
    consumer.process(child)  # its message was not deleted: a second delivery

    app.drain()

    assert log.events.count("report r") == 1


def test_nested_flow_completes_in_order(app: CloudJobs, log: _Log) -> None:
    inner = subflow(("report", {"name": "inner"}), [("fetch", {"n": n}) for n in range(5)])
    flow = app.flow(("report", {"name": "outer"}), children=[("fetch", {"n": 100}), inner])

    app.drain()

    assert log.events.index("report inner") > max(log.events.index(f"fetch {n}") for n in range(5))
    assert log.events[-1] == "report outer"
    assert log.events.count("report outer") == 1
    assert log.events.count("report inner") == 1
    [inner_id] = flow.subflows
    assert log.parent_results[-1] == {flow.child_ids[0]: {"n": 1000}, inner_id: 5}


def test_flow_without_children_is_refused(app: CloudJobs, backend: MemoryBackend) -> None:
    with pytest.raises(InvalidFlowError) as raised:
        app.flow(("report", {"name": "r"}), children=[])
    assert raised.value.setting == "children"
    assert backend.messages() == []


def test_too_many_children_are_refused_before_anything_is_sent(
    app: CloudJobs, backend: MemoryBackend
) -> None:
    children = [("fetch", {"n": n}) for n in range(MAX_FLOW_CHILDREN + 1)]
    with pytest.raises(FlowTooLargeError) as raised:
        app.flow(("report", {"name": "r"}), children=children)
    assert (raised.value.children, raised.value.limit) == (MAX_FLOW_CHILDREN + 1, MAX_FLOW_CHILDREN)
    assert backend.messages() == []


def test_unknown_rule_and_timeout_out_of_range_are_refused(app: CloudJobs) -> None:
    with pytest.raises(InvalidFlowError) as rule:
        app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1})], on_child_failure="retry")  # type: ignore[arg-type]
    assert rule.value.setting == "on_child_failure"
    with pytest.raises(InvalidFlowError) as timeout:
        app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1})], timeout=timedelta(days=30))
    assert timeout.value.setting == "timeout"


def test_child_results_outside_a_flow_parent_raise(app: CloudJobs, backend: MemoryBackend) -> None:
    seen: list[Exception] = []

    @app.job("lonely")
    def lonely(payload: dict[str, int], job: Job) -> None:
        try:
            job.child_results()
        except ConfigurationError as exc:
            seen.append(exc)

    app.enqueue("lonely", {})
    app.drain()
    assert len(seen) == 1


def test_testing_runs_flows_without_aws() -> None:
    jobs = CloudJobs()
    ran: list[int] = []

    @jobs.job("part")
    def part(payload: dict[str, int]) -> int:
        return payload["n"]

    @jobs.job("total")
    def total(payload: dict[str, int], job: Job) -> None:
        ran.append(sum(v for v in job.child_results().values() if isinstance(v, int)))

    with jobs.testing():
        jobs.flow(("total", {}), children=[("part", {"n": n}) for n in range(4)])
        jobs.drain()
    assert ran == [6]


def test_child_held_by_a_dead_run_waits_for_its_lease_and_keeps_its_result(
    app: CloudJobs, backend: MemoryBackend, clock: ManualClock, log: _Log
) -> None:
    flow = app.flow(("report", {"name": "r"}), children=[("fetch", {"n": 1})])
    consumer = app.consumer()
    [child] = [d for d in backend.receive(max_messages=10, wait=timedelta(0)) if flow.child_ids[0] in d.body]
    # A run that took the lease and died: a second copy must not run beside it (the record would
    # keep no result for the parent), even though "fetch" is not an idempotent type.
    assert not isinstance(consumer.prepare(child), Deferred)
    assert isinstance(consumer.process(child), Deferred)
    assert log.events == []

    clock.advance(timedelta(minutes=5))
    backend.advance(timedelta(minutes=5))
    app.drain()

    assert log.events == ["fetch 1", "report r"]
    assert log.parent_results == [{flow.child_ids[0]: {"n": 10}}]


def test_the_docs_example_runs_in_testing_and_its_result_is_readable() -> None:
    jobs = CloudJobs()

    @jobs.job("fetch")
    def fetch(page: dict[str, int]) -> dict[str, int]:
        return {"rows": page["number"] * 100}

    @jobs.job("report")
    def report(request: dict[str, str], job: Job) -> int:
        results = job.child_results()
        return sum(result["rows"] for result in results.values() if isinstance(result, dict))  # type: ignore[misc]

    with jobs.testing():
        flow = jobs.flow(
            ("report", {"name": "weekly"}), children=[("fetch", {"number": n}) for n in (1, 2, 3)]
        )
        jobs.drain()
        assert jobs.result(flow.parent_id) == 600
