"""A worker's ``queues`` and ``queue_concurrency``: what it accepts and what it refuses, at once."""

from __future__ import annotations

from typing import Any

import pytest

from cloudjobs import CloudJobs, ConfigurationError, MemoryBackend, Settings, UnknownQueueError


def _app() -> CloudJobs:
    backend = MemoryBackend("jobs")
    return CloudJobs(
        settings=Settings(_env_file=None, wait_time_seconds=1),
        backend=backend,
        queues={"critical": backend.sibling("jobs-critical"), "bulk": backend.sibling("jobs-bulk")},
    )


def test_weights_make_a_weighted_worker_and_a_list_a_strict_one_in_the_order_given() -> None:
    jobs = _app()

    weighted = jobs.worker(queues={"critical": 6, "default": 3, "bulk": 1}, queue_concurrency={"bulk": 4})
    strict = jobs.worker(queues=["bulk", "critical"])

    assert weighted.queues == ("critical", "default", "bulk")
    assert weighted.plan.weights == {"critical": 6, "default": 3, "bulk": 1}
    assert weighted.plan.caps == {"bulk": 4}
    assert strict.queues == ("bulk", "critical")
    assert strict.plan.weights is None
    assert "strict order" in strict.plan.describe()


def test_no_queues_means_the_default_queue_alone() -> None:
    assert _app().worker().queues == ("default",)


def test_an_unknown_queue_is_refused_when_the_worker_is_built_with_a_suggestion() -> None:
    with pytest.raises(UnknownQueueError) as raised:
        _app().worker(queues=["critical", "bulck"])

    assert raised.value.queue == "bulck"
    assert "did you mean 'bulk'" in str(raised.value)


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"critical": 0}, "positive integers"),
        ({"critical": 2.5}, "positive integers"),
        ({"critical": True}, "positive integers"),
        ([], "at least one queue"),
        ({}, "at least one queue"),
        ("critical", "not the string"),
        (["critical", "bulk", "critical"], "named twice"),
    ],
    ids=[
        "zero-weight",
        "fractional-weight",
        "boolean-weight",
        "empty-list",
        "empty-mapping",
        "string",
        "twice",
    ],
)
def test_malformed_queues_are_refused_naming_the_argument(queues: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        _app().worker(queues=queues)

    assert raised.value.setting == "queues"


@pytest.mark.parametrize(
    ("queue_concurrency", "message"),
    [
        ({"default": 2}, "does not consume"),
        ({"bulk": 0}, "at least 1"),
        ({"bulk": "4"}, "at least 1"),
    ],
    ids=["a-queue-not-consumed", "zero", "text"],
)
def test_malformed_queue_caps_are_refused_naming_the_argument(queue_concurrency: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        _app().worker(queues={"critical": 2, "bulk": 1}, queue_concurrency=queue_concurrency)

    assert raised.value.setting == "queue_concurrency"


def test_a_cap_above_the_concurrency_is_the_concurrency() -> None:
    worker = _app().worker(queues=["critical", "bulk"], concurrency=4, queue_concurrency={"bulk": 16})

    assert worker.plan.cap_of("bulk", worker.concurrency) == 4
    assert worker.plan.cap_of("critical", worker.concurrency) == 4
