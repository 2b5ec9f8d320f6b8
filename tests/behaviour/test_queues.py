"""Several queues in one app, stated once and run on memory and on SQS over HTTP: routing, tenants
as message groups kept through dead letters and redrives, and operations per queue.

The worker's side (weighted and strict polling, ``queue_concurrency``) has tests of its own; here a
named queue is consumed through its own consumer, as every runtime does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pydantic import BaseModel

from cloudjobs import CloudJobs, PermanentError
from cloudjobs.applier import OutcomeApplier
from cloudjobs.backends.base import Delivery
from cloudjobs.outcomes import Outcome
from tests.behaviour.conftest import Harness, running, wait_for


class Export(BaseModel):
    account: str


def consume(jobs: CloudJobs, queue: str, *, expected: int) -> list[Outcome]:
    """Receive and run ``expected`` messages of ``queue`` through its own consumer, applying outcomes."""
    backend = jobs.backend_of(queue)
    consumer = jobs.consumer(queue)
    applier = OutcomeApplier(backend, jobs.clock)
    outcomes: list[Outcome] = []

    def ran_all() -> bool:
        for delivery in backend.receive(max_messages=10, wait=timedelta(seconds=1)):
            outcomes.append(consumer.run(delivery, apply=applier.apply))
        applier.flush()
        return len(outcomes) >= expected

    wait_for(ran_all, message=f"{expected} runs on {queue}")
    return outcomes


def received(jobs: CloudJobs, queue: str | None, *, expected: int) -> list[Delivery]:
    """Receive ``expected`` messages of ``queue`` (held for a minute), without running them."""
    backend = jobs.backend_of(queue)
    seen: dict[str, Delivery] = {}

    def got_all() -> bool:
        for delivery in backend.receive(
            max_messages=10, wait=timedelta(seconds=1), visibility=timedelta(minutes=1)
        ):
            seen[delivery.message_id] = delivery
        return len(seen) >= expected

    wait_for(got_all, message=f"{expected} messages on {queue}")
    return list(seen.values())


def register(jobs: CloudJobs, ran: list[tuple[str, str]]) -> Callable[[], None]:
    @jobs.job("export", queue="bulk", tenant="account")
    def export(payload: Export) -> None:
        ran.append(("export", payload.account))

    @jobs.job("reset-password", queue="critical")
    def reset(payload: dict[str, str]) -> None:
        ran.append(("reset-password", payload["user"]))

    return lambda: None


def test_each_job_travels_on_its_registered_queue_or_the_override(harness: Harness) -> None:
    jobs = harness.app(queues=["critical", "bulk"])
    ran: list[tuple[str, str]] = []
    register(jobs, ran)

    jobs.enqueue("export", Export(account="acme"))
    jobs.enqueue("reset-password", {"user": "ada"})
    jobs.enqueue("export", Export(account="initech"), queue="critical")

    assert {name: stats.visible for name, stats in jobs.stats_all().items()} == {
        "default": 0,
        "critical": 2,
        "bulk": 1,
    }
    consume(jobs, "critical", expected=2)
    consume(jobs, "bulk", expected=1)
    assert sorted(ran) == [("export", "acme"), ("export", "initech"), ("reset-password", "ada")]
    assert all(harness.is_empty(jobs, name) for name in ("default", "critical", "bulk"))


def test_a_tenant_is_really_sent_as_the_message_group_of_a_standard_queue(harness: Harness) -> None:
    jobs = harness.app(queues=["bulk"])
    register(jobs, [])

    jobs.enqueue("export", Export(account="acme"))
    jobs.enqueue("export", Export(account="Zoë Industries"))
    jobs.enqueue("other", {}, queue="bulk")

    groups = sorted(str(delivery.group_id) for delivery in received(jobs, "bulk", expected=3))
    assert groups[0] == "None"
    assert groups[1] == "acme"
    assert groups[2].startswith("sha256-")


def test_a_fifo_queue_takes_the_tenant_as_its_group(harness: Harness) -> None:
    jobs = harness.app(queues=["orders.fifo"])

    @jobs.job("ship", queue="orders", tenant="account")
    def ship(payload: Export) -> None: ...

    ship.enqueue(Export(account="acme"))
    jobs.enqueue("ship", Export(account="initech"), queue="orders", group_id="initech")

    assert sorted(str(d.group_id) for d in received(jobs, "orders", expected=2)) == ["acme", "initech"]


def _dead_letter_a_tenants_job(jobs: CloudJobs) -> None:
    @jobs.job("sync", tenant="account")
    def sync(payload: Export) -> None:
        raise PermanentError("account closed")

    sync.enqueue(Export(account="acme"))
    with running(jobs) as worker:
        wait_for(lambda: worker.counts["dead_lettered"] == 1, message="the dead letter")


def test_a_dead_letter_keeps_the_tenant(harness: Harness) -> None:
    jobs = harness.app()
    _dead_letter_a_tenants_job(jobs)

    [dead] = harness.dead_letters(jobs, expected=1)

    assert dead["group_id"] == "acme"


def test_a_redriven_job_keeps_the_tenant(harness: Harness) -> None:
    jobs = harness.app()
    _dead_letter_a_tenants_job(jobs)

    wait_for(lambda: jobs.dlq.redrive(job_type="sync").moved == 1, message="the redrive")

    [back] = received(jobs, None, expected=1)
    assert back.group_id == "acme"


def test_a_named_queue_dead_letters_into_its_own_dlq_and_is_operated_by_name(harness: Harness) -> None:
    jobs = harness.app(queues=["critical", "bulk"])

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None:
        raise PermanentError(f"account {payload.account} closed")

    export.enqueue(Export(account="acme"))
    consume(jobs, "bulk", expected=1)

    wait_for(lambda: jobs.stats(queue="bulk").dlq_depth == 1, message="the bulk DLQ's count")
    assert jobs.stats().dlq_depth == 0
    assert jobs.stats(queue="critical").dlq_depth == 0
    assert jobs.dlq.list() == []
    [listed] = jobs.dlq.list(queue="bulk")
    assert listed.type == "export"
    assert listed.reason == "permanent_error"
    assert "acme closed" in (listed.error or "")
    assert jobs.dlq.redrive(job_type="export", queue="bulk").moved == 1
    consume(jobs, "bulk", expected=1)
    harness.dead_letters(jobs, expected=1, queue="bulk")
