"""How fast the dashboard answers with 10 queues and 10,000 dead letters.

Ten queues (each with its DLQ) and one DLQ holding ``--dead-letters`` messages; the dashboard is
served on 127.0.0.1 and each page is fetched ``--rounds`` times. Reported: the median time of the
overview (every queue's depths, read concurrently), the dead-letter page (a bounded sample of 100 for
the grouped counts plus one page of 20), a later page of it, and a job page, with the AWS requests
each made. No request reads more than its sample and its pages of the DLQ, however deep it is.

``--backend memory`` (the default) measures the dashboard's own cost on memory queues;
``--backend moto`` the same pages against one moto server, whose SQS slows as a queue deepens (it
takes minutes to fill 10,000 messages, and its receives scan the queue).

Run: ``python bench/dashboard.py`` (``--backend memory|moto --dead-letters 10000 --rounds 5``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.session
import httpx

from cloudjobs import CloudJobs, MemoryBackend, Settings
from cloudjobs.backends.base import OutgoingMessage
from cloudjobs.dashboard import NoAuth, create_app
from cloudjobs.dashboard.serving import serving
from cloudjobs.idempotency.memory import MemoryIdempotencyStore
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, provision_queue

QUEUES = 10
DEAD = json.dumps({"reason": "permanent_error", "error": "declined", "attempts": 1})


def body(n: int) -> str:
    return json.dumps(
        {
            "cloudjobs": 1,
            "id": f"job-{n}",
            "type": "charge",
            "payload": {"order": n},
            "correlation_id": "c",
            "enqueued_at": "2026-12-02T12:00:00Z",
        }
    )


@contextlib.contextmanager
def memory_app(dead_letters: int) -> Iterator[CloudJobs]:
    default = MemoryBackend("q0")
    named: dict[str, str | Any] = {f"q{n}": default.sibling(f"q{n}") for n in range(1, QUEUES)}
    dlq = default.dead_letter_queue
    assert dlq is not None
    for start in range(0, dead_letters, 10):
        dlq.send(
            [
                OutgoingMessage(body=body(start + n), attributes={"cloudjobs.dead_letter": DEAD})
                for n in range(min(10, dead_letters - start))
            ]
        )
    yield CloudJobs(
        settings=Settings(_env_file=None),
        backend=default,
        queues=named,
        idempotency_store=MemoryIdempotencyStore(),
    )


@contextlib.contextmanager
def moto_app(dead_letters: int) -> Iterator[CloudJobs]:
    with LocalAwsServer() as server:
        os.environ.update(local_environment(server.endpoint_url))
        sqs = boto3.session.Session().client("sqs")
        suffix = uuid.uuid4().hex[:6]
        queues = [provision_queue(QueueSpec(f"q{n}-{suffix}"), client=sqs) for n in range(QUEUES)]
        attributes: dict[str, Any] = {"cloudjobs.dead_letter": {"DataType": "String", "StringValue": DEAD}}
        for start in range(0, dead_letters, 10):
            sqs.send_message_batch(
                QueueUrl=queues[0].dlq_url,
                Entries=[
                    {"Id": str(n), "MessageBody": body(start + n), "MessageAttributes": attributes}
                    for n in range(min(10, dead_letters - start))
                ],
            )
        yield CloudJobs(
            settings=Settings(
                _env_file=None,
                queue_url=queues[0].queue_url,
                queues={f"q{n}": queue.queue_url for n, queue in enumerate(queues[1:], start=1)},
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("memory", "moto"), default="memory")
    parser.add_argument("--dead-letters", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    requests: Counter[str] = Counter()
    create = botocore.session.Session.create_client

    def counted(session: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = create(session, *args, **kwargs)
        client.meta.events.register("before-call", lambda model, **_: requests.update([model.name]))
        return client

    botocore.session.Session.create_client = counted  # type: ignore[method-assign,assignment]
    build = memory_app if options.backend == "memory" else moto_app
    with build(options.dead_letters) as jobs:
        application = create_app(jobs, auth=NoAuth("benchmark on 127.0.0.1"))
        pages = {
            "overview": "/",
            "dead letters, page 1": "/dead-letters",
            "dead letters, page 3": "/dead-letters?page=3",
            "job": "/jobs?id=job-1",
        }
        print(
            f"{QUEUES} queues, {options.dead_letters:,} dead letters in one DLQ, {options.backend}, "
            f"median of {options.rounds}"
        )
        print(f"{'page':<22} {'median ms':>10} {'AWS requests':>13}")
        with serving(application) as url, httpx.Client(base_url=url, timeout=300) as client:
            for name, path in pages.items():
                times = []
                for _ in range(options.rounds):
                    requests.clear()
                    started = time.perf_counter()
                    answer = client.get(path)
                    times.append(time.perf_counter() - started)
                    assert answer.status_code == 200, (path, answer.status_code)
                print(f"{name:<22} {statistics.median(times) * 1000:>10.0f} {sum(requests.values()):>13}")


if __name__ == "__main__":
    main()
