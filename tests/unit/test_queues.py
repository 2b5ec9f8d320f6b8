"""An app's named queues: configuration, routing, tenants as message groups, per-queue operations."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import BaseModel

from cloudjobs import (
    BatchEnqueueError,
    CloudJobs,
    ConfigurationError,
    InvalidGroupIdError,
    Job,
    MemoryBackend,
    PayloadTooLargeError,
    PermanentError,
    Settings,
    UnknownQueueError,
)
from cloudjobs.groups import group_of_tenant, is_valid_group_id, message_group
from cloudjobs.queues import parse_queues, queue_name_of
from cloudjobs.settings import load_settings


class Export(BaseModel):
    account: str
    rows: int = 1


def make_app(**queues: MemoryBackend | str) -> CloudJobs:
    settings = Settings(_env_file=None)
    return CloudJobs(settings=settings, backend=MemoryBackend("jobs"), queues=queues)


def bodies(backend: MemoryBackend) -> list[dict[str, object]]:
    return [json.loads(message.body) for message in backend.messages()]


# -- configuration ------------------------------------------------------------------------------


def test_queues_parse_from_name_value_pairs_with_urls_and_names() -> None:
    parsed = parse_queues(" critical=https://sqs.eu-west-1.amazonaws.com/1/app-critical , bulk = app-bulk,")

    assert parsed == {"critical": "https://sqs.eu-west-1.amazonaws.com/1/app-critical", "bulk": "app-bulk"}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("critical", "is not NAME=VALUE"),
        ("critical=", "is not NAME=VALUE"),
        ("=url", "is not NAME=VALUE"),
        ("default=app-default", "'default' is the queue of"),
        ("a=x,a=y", "named twice"),
        ("bad name=x", "must be 1-80 letters"),
    ],
)
def test_malformed_queue_entries_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, complaint: str
) -> None:
    monkeypatch.setenv("CLOUDJOBS_QUEUES", value)

    with pytest.raises(ConfigurationError, match=complaint) as raised:
        load_settings()

    assert raised.value.setting == "CLOUDJOBS_QUEUES"


def test_queues_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CLOUDJOBS_QUEUES", "critical=http://127.0.0.1:5000/123/app-critical.fifo,bulk=app-bulk"
    )
    monkeypatch.setenv("CLOUDJOBS_QUEUE_NAME", "app-default")

    jobs = CloudJobs()

    assert jobs.queue_names == ["default", "critical", "bulk"]
    assert queue_name_of(jobs.settings.queues["critical"]) == "app-critical.fifo"


def test_an_app_without_a_default_queue_lists_only_its_named_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDJOBS_QUEUE_URL", raising=False)
    monkeypatch.delenv("CLOUDJOBS_QUEUE_NAME", raising=False)
    monkeypatch.setenv("CLOUDJOBS_QUEUES", "critical=app-critical")

    assert CloudJobs().queue_names == ["critical"]


def test_queues_given_in_code_replace_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDJOBS_QUEUES", "other=app-other")
    jobs = make_app(bulk=MemoryBackend("bulk"))

    assert jobs.queue_names == ["default", "bulk"]
    with pytest.raises(UnknownQueueError):
        jobs.backend_of("other")


@pytest.mark.parametrize("name", ["default", "no spaces", ""])
def test_code_cannot_name_the_default_queue_or_malformed_ones(name: str) -> None:
    with pytest.raises(ConfigurationError):
        CloudJobs(queues={name: MemoryBackend("x")})


def test_a_job_registered_on_a_malformed_queue_name_is_refused() -> None:
    jobs = make_app()

    with pytest.raises(ConfigurationError, match="letters, digits"):
        jobs.job("export", queue="bulk queue")


# -- routing ------------------------------------------------------------------------------------


def test_jobs_go_to_the_queue_they_are_registered_with() -> None:
    bulk = MemoryBackend("bulk")
    jobs = make_app(bulk=bulk)

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None: ...

    @jobs.job("email")
    def email(payload: dict[str, str]) -> None: ...

    jobs.enqueue("export", Export(account="a"))
    jobs.enqueue("email", {"to": "x"})

    assert [body["type"] for body in bodies(bulk)] == ["export"]
    default = jobs.backend
    assert isinstance(default, MemoryBackend)
    assert [body["type"] for body in bodies(default)] == ["email"]


def test_the_enqueue_override_wins_over_the_registration() -> None:
    bulk, critical = MemoryBackend("bulk"), MemoryBackend("critical")
    jobs = make_app(bulk=bulk, critical=critical)

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None: ...

    export.enqueue(Export(account="a"), queue="critical")
    jobs.enqueue("export", Export(account="b"), queue="default")

    assert len(critical) == 1
    assert len(bulk) == 0
    assert len(jobs.backend_of("default")) == 1  # type: ignore[arg-type]


def test_an_unknown_queue_is_refused_before_anything_is_sent() -> None:
    jobs = make_app(bulk=MemoryBackend("bulk"))

    @jobs.job("export", queue="bluk")
    def export(payload: Export) -> None: ...

    with pytest.raises(UnknownQueueError, match="did you mean 'bulk'") as raised:
        jobs.enqueue("export", Export(account="a"))

    assert raised.value.queue == "bluk"
    assert raised.value.known == ("default", "bulk")


def test_a_batch_over_several_queues_checks_every_message_before_sending_any() -> None:
    bulk = MemoryBackend("bulk", max_message_size=2_000)
    jobs = make_app(bulk=bulk)

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None: ...

    with pytest.raises(PayloadTooLargeError):
        jobs.enqueue_many([("email", {"to": "x"}), ("export", Export(account="a" * 3_000))])

    assert len(jobs.backend_of()) == 0  # type: ignore[arg-type]
    assert len(bulk) == 0


def test_a_batch_over_several_queues_returns_ids_in_request_order() -> None:
    bulk = MemoryBackend("bulk")
    jobs = make_app(bulk=bulk)

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None: ...

    ids = jobs.enqueue_many([("export", Export(account="a")), ("email", {}), ("export", Export(account="b"))])

    assert [body["id"] for body in bodies(bulk)] == [ids[0], ids[2]]
    assert [body["id"] for body in bodies(jobs.backend_of())] == [ids[1]]  # type: ignore[arg-type]


def test_a_queue_that_refuses_its_part_of_a_batch_leaves_the_others_sent() -> None:
    bulk = MemoryBackend("bulk")
    jobs = make_app(bulk=bulk)

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None: ...

    def refuse(messages: object) -> list[object]:
        raise PermanentError("queue gone")

    bulk.send = refuse  # type: ignore[method-assign,assignment]

    with pytest.raises(BatchEnqueueError) as raised:
        jobs.enqueue_many([("export", Export(account="a")), ("email", {})])

    assert raised.value.sent[0] is None
    assert raised.value.sent[1] is not None
    assert list(raised.value.failures) == [0]
    assert len(jobs.backend_of()) == 1  # type: ignore[arg-type]


def test_a_job_enqueued_by_a_handler_goes_to_its_own_types_queue() -> None:
    bulk, critical = MemoryBackend("bulk"), MemoryBackend("critical")
    jobs = make_app(bulk=bulk, critical=critical)
    ran: list[str] = []

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None:
        ran.append("export")
        jobs.enqueue("notify", {"account": payload.account})

    @jobs.job("notify", queue="critical")
    def notify(payload: dict[str, str]) -> None:
        ran.append("notify")

    with jobs.testing():
        jobs.enqueue("export", Export(account="a"))
        sent_to = [jobs.backend_of(name) for name in ("bulk", "critical")]
        report = jobs.drain()

    assert ran == ["export", "notify"]
    assert report.completed == 2
    assert all(isinstance(backend, MemoryBackend) and len(backend) == 0 for backend in sent_to)


def test_testing_gives_each_named_queue_a_memory_queue_of_its_kind() -> None:
    jobs = CloudJobs(queues={"orders": "https://sqs.eu-west-1.amazonaws.com/1/app-orders.fifo"})

    with jobs.testing():
        orders = jobs.backend_of("orders")
        assert isinstance(orders, MemoryBackend)
        assert orders.info().is_fifo
        assert orders.info().name == "app-orders.fifo"


def test_drain_skips_delays_across_queues() -> None:
    jobs = CloudJobs(queues={"bulk": "app-bulk"})
    ran: list[str] = []

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None:
        ran.append(payload.account)

    with jobs.testing():
        jobs.enqueue("export", Export(account="later"), delay=timedelta(minutes=10))
        jobs.enqueue("export", Export(account="now"))
        jobs.drain()

    assert ran == ["now", "later"]


# -- tenants and message groups ------------------------------------------------------------------


def test_a_tenant_is_sent_as_the_message_group_on_a_standard_queue() -> None:
    jobs = make_app()
    jobs.enqueue("email", {}, tenant="acme")
    jobs.enqueue("email", {})

    groups = [message.group_id for message in jobs.backend_of().messages()]  # type: ignore[attr-defined]

    assert groups == ["acme", None]


def test_a_tenant_is_derived_from_a_field_or_a_function_of_the_payload() -> None:
    jobs = make_app()

    @jobs.job("export", tenant="account")
    def export(payload: Export) -> None: ...

    @jobs.job("report", tenant=lambda payload: f"{payload.account}-{payload.rows}")
    def report(payload: Export) -> None: ...

    export.enqueue(Export(account="acme"))
    report.enqueue(Export(account="acme", rows=3))
    export.enqueue(Export(account="acme"), tenant="override")

    groups = [message.group_id for message in jobs.backend_of().messages()]  # type: ignore[attr-defined]
    assert groups == ["acme", "acme-3", "override"]


def test_fifo_groups_follow_group_then_tenant_then_setting_then_type() -> None:
    def group(**given: str | None) -> str | None:
        options: dict[str, str | None] = {"group_id": None, "tenant": None, "default_group_id": None}
        options.update(given)
        return message_group(is_fifo=True, job_type="export", **options)

    assert group(group_id="g", tenant="g", default_group_id="d") == "g"
    assert group(tenant="t", default_group_id="d") == "t"
    assert group(default_group_id="d") == "d"
    assert group() == "export"


def test_a_group_and_a_tenant_that_differ_are_refused() -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=MemoryBackend("jobs.fifo"))

    with pytest.raises(InvalidGroupIdError, match="different message groups"):
        jobs.enqueue("email", {}, group_id="a", tenant="b")


@pytest.mark.parametrize("group_id", ["", "x" * 129, "with space", "naïve"])
def test_a_group_id_sqs_refuses_is_refused_before_sending(group_id: str) -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=MemoryBackend("jobs.fifo"))

    with pytest.raises(InvalidGroupIdError):
        jobs.enqueue("email", {}, group_id=group_id)

    assert len(jobs.backend_of()) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize("tenant", ["Ada Lovelace", "zoë@example.com", "t" * 500])
def test_a_tenant_sqs_would_refuse_is_sent_hashed_and_stays_stable(tenant: str) -> None:
    group = group_of_tenant(tenant)

    assert group.startswith("sha256-")
    assert len(group) == 71
    assert is_valid_group_id(group)
    assert group_of_tenant(tenant) == group
    assert group_of_tenant(tenant + "!") != group


def test_a_valid_tenant_is_sent_as_it_is() -> None:
    assert group_of_tenant("acct-7:eu/1") == "acct-7:eu/1"


def test_retries_and_dead_letters_keep_the_tenant() -> None:
    jobs = make_app()

    @jobs.job("export", tenant="account", max_attempts=2)
    def export(payload: Export, job: Job) -> None:
        raise RuntimeError("fails")

    export.enqueue(Export(account="acme"))
    jobs.drain()

    backend = jobs.backend_of()
    assert isinstance(backend, MemoryBackend)
    assert backend.dead_letter_queue is not None
    dead = backend.dead_letter_queue.messages()
    assert [message.group_id for message in dead] == ["acme"]


# -- operations per queue -------------------------------------------------------------------------


def test_stats_read_the_queue_asked_for_and_stats_all_reads_every_queue() -> None:
    bulk = MemoryBackend("bulk")
    jobs = make_app(bulk=bulk)
    jobs.enqueue("export", {}, queue="bulk")
    jobs.enqueue("export", {}, queue="bulk")
    jobs.enqueue("email", {})

    assert jobs.stats(queue="bulk").visible == 2
    assert jobs.stats().visible == 1
    assert {name: stats.visible for name, stats in jobs.stats_all().items()} == {"default": 1, "bulk": 2}


def test_dead_letter_operations_act_on_the_queue_asked_for() -> None:
    bulk = MemoryBackend("bulk", max_receive_count=1)
    jobs = make_app(bulk=bulk)

    @jobs.job("export", queue="bulk")
    def export(payload: Export) -> None:
        raise PermanentError("no such account")

    export.enqueue(Export(account="a"))
    jobs.drain()

    assert jobs.dlq.list() == []
    listed = jobs.dlq.list(queue="bulk")
    assert [(job.type, job.reason) for job in listed] == [("export", "permanent_error")]
    report = jobs.dlq.redrive(queue="bulk")
    assert report.moved == 1
    assert len(bulk) == 1


def test_purge_without_a_queue_is_refused_when_the_app_has_several() -> None:
    bulk = MemoryBackend("bulk")
    jobs = make_app(bulk=bulk)

    with pytest.raises(ConfigurationError, match="name the one"):
        jobs.dlq.purge()

    assert jobs.dlq.purge(queue="bulk") == 0


def test_purge_without_a_queue_still_works_on_a_single_queue_app() -> None:
    jobs = CloudJobs(settings=Settings(_env_file=None), backend=MemoryBackend("jobs"))

    assert jobs.dlq.purge() == 0
