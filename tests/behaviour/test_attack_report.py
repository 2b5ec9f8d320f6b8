"""The attack report: hostile bodies, misbehaving handlers and good jobs, all at once, against a
running worker on both backends. Every message must end where it should: each good job completed
exactly once, each attack in the dead-letter queue with its expected reason, the worker alive.

The figures (``attacks[<backend>]: tried=N lost=0 crashes=0 wrong=0``) are printed at the end of
the test session and quoted in the README's reliability section.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Job, PermanentError
from cloudjobs.backends.base import OutgoingMessage, TypedAttribute
from tests.behaviour.conftest import ATTACK_REPORTS, Harness, running, wait_for
from tests.bodies import envelope_body


class Charge(BaseModel):
    order: str
    amount: float


@dataclass(frozen=True)
class Attack:
    """One message sent raw, and the reason it must be dead-lettered with."""

    name: str
    body: str
    reason: str
    attributes: dict[str, str] = field(default_factory=dict)
    typed_attributes: dict[str, TypedAttribute] = field(default_factory=dict)


def _attacks() -> list[Attack]:
    nested = "[" * 5000 + "]" * 5000
    return [
        Attack("plain text", "not json at all", "unroutable"),
        Attack("json null", "null", "unroutable"),
        Attack("json list", "[1, 2, 3]", "unroutable"),
        Attack("empty object", "{}", "unroutable"),
        Attack("byte order mark", "\ufeff" + envelope_body("charge"), "unroutable"),
        Attack("version only", '{"cloudjobs": 1}', "malformed_envelope"),
        Attack("version as text", '{"cloudjobs": "one"}', "malformed_envelope"),
        Attack("future version", envelope_body("charge", cloudjobs=99), "unsupported_version"),
        Attack("type as number", envelope_body("charge", type=5), "malformed_envelope"),
        Attack("bad enqueue time", envelope_body("charge", enqueued_at="yesterday"), "malformed_envelope"),
        Attack("negative offset", envelope_body("charge", attempt_offset=-1), "malformed_envelope"),
        Attack("5,000-deep body", '{"cloudjobs": 1, "payload": ' + nested + "}", "malformed_envelope"),
        Attack("5,000-deep payload", envelope_body("charge", nested), "malformed_envelope"),
        Attack("payload fails schema", envelope_body("charge", '{"order": 1}'), "invalid_payload"),
        Attack("payload is a list", envelope_body("charge", "[1]"), "invalid_payload"),
        Attack("NaN amount", envelope_body("charge", '{"order": "o", "amount": NaN}'), "invalid_payload"),
        Attack(
            "infinite amount", envelope_body("charge", '{"order": "o", "amount": 1e400}'), "invalid_payload"
        ),
        Attack(
            "lone surrogate",
            envelope_body("charge", '{"order": "\\ud800", "amount": 1}'),
            "malformed_envelope",
        ),
        Attack("key field missing", envelope_body("keyed", '{"other": "x"}'), "invalid_idempotency_key"),
        Attack(
            "key too long",
            envelope_body("keyed", json.dumps({"account": "a" * 2000})),
            "invalid_idempotency_key",
        ),
        Attack(
            "producer key too long", envelope_body("charge", idempotency_key="k" * 2000), "malformed_envelope"
        ),
        Attack("unknown job type", envelope_body("no-such-job"), "unknown_job"),
        Attack(
            "ten attributes, refused",
            envelope_body("refuse"),
            "permanent_error",
            attributes={f"sender.{n}": "v" * 50 for n in range(8)},
            typed_attributes={"n": TypedAttribute("Number", "1"), "b": TypedAttribute("Binary", b"\x00")},
        ),
        Attack("unicode job type", envelope_body("refuse-\u00e9\U0001f600"), "unknown_job"),
    ]


_EXITS: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(2),
    "KeyboardInterrupt": KeyboardInterrupt,
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
    "RecursionError": RecursionError,
    "MemoryError": MemoryError,
}


def test_attacks_are_all_accounted_for_and_the_worker_survives(
    harness: Harness, request: pytest.FixtureRequest
) -> None:
    jobs = harness.app(max_attempts=2, with_store=True, random=lambda: 0.0)
    completed: Counter[str] = Counter()
    lock = threading.Lock()
    _register(jobs, completed, lock)
    attacks = _attacks()
    exits = [(name, is_async) for name in _EXITS for is_async in (False, True)]
    good = [uuid.uuid4().hex for _ in range(20)]

    for index, attack in enumerate(attacks):
        [result] = jobs.backend.send(
            [
                OutgoingMessage(
                    body=attack.body, attributes=attack.attributes, typed_attributes=attack.typed_attributes
                )
            ]
        )
        assert result.is_sent, (attack.name, result.error)
        if index < len(good):
            jobs.enqueue("good", {"token": good[index]})
    jobs.enqueue_many([("exit-async" if is_async else "exit", {"kind": name}) for name, is_async in exits])

    tried = len(attacks) + len(exits) + len(good)
    with running(jobs, concurrency=4) as worker:
        dead = harness.dead_letters(jobs, expected=len(attacks) + len(exits))
        wait_for(lambda: sum(completed.values()) >= len(good), message="the good jobs")
        # The worker is still whole: as many jobs as it has handler threads run after everything else.
        after = [f"after-{n}" for n in range(worker.concurrency)]
        jobs.enqueue_many([("good", {"token": token}) for token in after])
        wait_for(lambda: all(completed[token] == 1 for token in after), message="jobs after the attacks")
        crashes = sum(1 for token in after if completed[token] != 1)

    by_body = {record["body"]: record for record in dead}
    wrong = [a.name for a in attacks if a.body in by_body and by_body[a.body]["reason"] != a.reason]
    lost = [a.name for a in attacks if a.body not in by_body]
    exit_errors = Counter(
        record["error"].split(":")[0] for record in dead if record["body"] not in {a.body for a in attacks}
    )
    wrong += [name for name in _EXITS if exit_errors[name] != 2]
    lost += [token for token in good if completed[token] == 0]
    wrong += [token for token in good if completed[token] > 1]
    report = f"tried={tried} lost={len(lost)} crashes={crashes} wrong={len(wrong)}"
    request.config.stash.setdefault(ATTACK_REPORTS, {})[harness.kind] = report

    assert (lost, wrong, crashes) == ([], [], 0), report


def _register(jobs: CloudJobs, completed: Counter[str], lock: threading.Lock) -> None:
    @jobs.job("good", idempotency_key="token")
    def good(payload: dict[str, str]) -> None:
        with lock:
            completed[payload["token"]] += 1

    @jobs.job("charge", idempotency_key="order")
    def charge(payload: Charge) -> None: ...

    @jobs.job("keyed", idempotency_key=lambda payload: payload["account"])
    def keyed(payload: dict[str, str]) -> None: ...

    @jobs.job("refuse")
    def refuse(payload: dict[str, str]) -> None:
        raise PermanentError("refused")

    @jobs.job("exit")
    def exit_(payload: dict[str, str], job: Job) -> None:
        raise _EXITS[payload["kind"]]()

    @jobs.job("exit-async")
    async def exit_async(payload: dict[str, str], job: Job) -> None:
        raise _EXITS[payload["kind"]]()


@pytest.fixture(autouse=True)
def _quiet_job_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Sixty failing attempts log their tracebacks: keep them out of a failing test's output.
    caplog.set_level("ERROR", logger="cloudjobs.jobs")
