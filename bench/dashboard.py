"""How fast the dashboard answers with 10 queues and 10,000 dead letters, on one moto server.

Ten queues (each with its DLQ) are provisioned and one DLQ gets 10,000 messages; the dashboard is
served on 127.0.0.1 and each page is fetched ``--rounds`` times. Reported: the median time of the
overview (every queue's depths, read concurrently), the dead-letter page (a bounded sample of 100
for the grouped counts plus one page of 20), a later page of it, and a job page; with the AWS
requests each made. No request reads more than a page's worth of the DLQ beyond the sample, however
deep it is.

Run: ``python bench/dashboard.py`` (``--dead-letters 10000 --rounds 5``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections import Counter
from typing import Any

import boto3
import botocore.session
import httpx

from cloudjobs import CloudJobs, Settings
from cloudjobs.dashboard import NoAuth, create_app
from cloudjobs.dashboard.serving import serving
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, provision_queue

QUEUES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dead-letters", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with LocalAwsServer() as server:
        os.environ.update(local_environment(server.endpoint_url))
        sqs = boto3.session.Session().client("sqs")
        suffix = uuid.uuid4().hex[:6]
        queues = [provision_queue(QueueSpec(f"q{n}-{suffix}"), client=sqs) for n in range(QUEUES)]
        body = json.dumps(
            {
                "cloudjobs": 1,
                "id": "x",
                "type": "charge",
                "payload": {"order": 1},
                "correlation_id": "c",
                "enqueued_at": "2026-12-02T12:00:00Z",
            }
        )
        dead = json.dumps({"reason": "permanent_error", "error": "declined", "attempts": 1})
        for start in range(0, options.dead_letters, 10):
            sqs.send_message_batch(
                QueueUrl=queues[0].dlq_url,
                Entries=[
                    {
                        "Id": str(n),
                        "MessageBody": body.replace('"x"', f'"job-{start + n}"'),
                        "MessageAttributes": {
                            "cloudjobs.dead_letter": {"DataType": "String", "StringValue": dead}
                        },
                    }
                    for n in range(min(10, options.dead_letters - start))
                ],
            )
        jobs = CloudJobs(
            settings=Settings(
                _env_file=None,
                queue_url=queues[0].queue_url,
                queues={f"q{n}": queue.queue_url for n, queue in enumerate(queues[1:], start=1)},
            )
        )
        requests: Counter[str] = Counter()
        create = botocore.session.Session.create_client

        def counted(session: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
            client = create(session, *args, **kwargs)
            client.meta.events.register(
                "before-call",
                lambda model, **_: requests.update([f"{model.service_model.service_id}.{model.name}"]),
            )
            return client

        botocore.session.Session.create_client = counted  # type: ignore[method-assign,assignment]
        application = create_app(jobs, auth=NoAuth("benchmark on 127.0.0.1"))
        pages = {
            "overview": "/",
            "dead letters, page 1": "/dead-letters",
            "dead letters, page 3": "/dead-letters?page=3",
            "job": "/jobs?id=job-1",
        }
        print(f"{QUEUES} queues, {options.dead_letters:,} dead letters in one DLQ, {options.rounds} rounds")
        print(f"{'page':<22} {'median ms':>10} {'AWS requests':>13}")
        with serving(application) as url, httpx.Client(base_url=url, timeout=120) as client:
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
