"""Throughput, request economy and consumer CPU: cloudjobs against a raw boto3 loop, in one run.

Both contenders run against the same moto server (its own process), on a fresh queue each round, in
alternating rounds, with the same number of polling threads and a no-op handler:

- **raw boto3**: SendMessageBatch by tens; ``concurrency`` threads each ReceiveMessage (10, long
  poll) → no-op → DeleteMessageBatch.
- **cloudjobs**: ``enqueue_many`` by tens; ``jobs.worker(concurrency=...)`` with a no-op handler.

Producer and consumer overlap, and the producer keeps the queue's depth near ``--depth`` (it sends
another batch whenever the queue holds fewer): moto's cost per request grows with the number of
messages in the queue (a receive plus a delete costs ~44 ms at depth 100 and ~1.2 s at depth 2,000
on the reference machine), so both contenders are held at the same, modest depth.

The consumer runs in a child process, so its CPU time (user + system, from its first request to its
last) is the consumer's own. Requests are counted with botocore ``before-call`` hooks in both
processes, start-up and empty polls included; the producer's depth probes use a separate client and
are not counted. Medians of the rounds are reported, with the ratios to the baseline of the same run.

Run: ``python bench/throughput.py`` (``--messages 2000 --rounds 3 --concurrency 8 --depth 100``);
``--json PATH`` also writes the parameters, every round and the medians and ratios, for
``bench/gate.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

# Imported before any measurement starts: import time is start-up cost, not per-message cost.
from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.sqs import SqsBackend
from cloudjobs.local import LocalAwsServer, local_environment
from cloudjobs.provisioning import QueueSpec, provision_queue

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

CONTENDERS = ("raw boto3", "cloudjobs")
METRICS = ("per_second", "requests_per_message", "cpu_per_thousand")
"""The figures compared between contenders, as :class:`Measurement` properties."""


@dataclass(slots=True)
class Measurement:
    """One contender's round."""

    messages: int
    seconds: float
    cpu_seconds: float
    requests: Counter[str] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def requests_per_message(self) -> float:
        return sum(self.requests.values()) / self.messages

    @property
    def cpu_per_thousand(self) -> float:
        return self.cpu_seconds / self.messages * 1000


def counting_session(counter: Counter[str]) -> boto3.Session:
    """A boto3 session whose clients count every SQS API call by operation name."""
    session = boto3.Session()

    def count(model: Any, **_: Any) -> None:
        counter[model.name] += 1

    session.events.register("before-call.sqs", count)
    return session


def _config(concurrency: int) -> Config:
    return Config(max_pool_connections=concurrency + 4, read_timeout=30)


# -- consumers (run in the child process) ---------------------------------------------------------


def consume_raw(url: str, messages: int, concurrency: int, counter: Counter[str]) -> None:
    """The hand-written loop: N threads of receive → no-op → delete batch."""
    client = counting_session(counter).client("sqs", config=_config(concurrency))
    consumed = 0
    lock = threading.Lock()

    def poll() -> None:
        nonlocal consumed
        while True:
            with lock:
                if consumed >= messages:
                    return
            received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not received:
                continue
            for message in received:
                _ = message["Body"]  # the no-op handler
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)
            ]
            client.delete_message_batch(QueueUrl=url, Entries=entries)
            with lock:
                consumed += len(received)

    threads = [threading.Thread(target=poll) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()


def consume_cloudjobs(url: str, messages: int, concurrency: int, counter: Counter[str]) -> None:
    """cloudjobs' worker with a no-op handler, stopped once every job completed."""
    backend = SqsBackend(
        queue_url=url,
        session=counting_session(counter),
        max_pool_connections=concurrency + 4,
        wait_time_seconds=1,
    )
    jobs = CloudJobs(
        settings=Settings(queue_url=url, wait_time_seconds=1, concurrency=concurrency), backend=backend
    )

    @jobs.job("noop")
    def noop(payload: dict[str, int]) -> None:
        return None

    worker = jobs.worker(concurrency=concurrency)
    thread = threading.Thread(target=worker.run)
    thread.start()
    done = threading.Event()
    while not done.wait(0.01):
        if worker.counts["completed"] >= messages:
            done.set()
    worker.stop()
    thread.join()
    backend.close()


def child(arguments: argparse.Namespace) -> int:
    """Consume ``--messages`` from ``--queue-url``; print seconds, CPU and requests as JSON."""
    counter: Counter[str] = Counter()
    consume = consume_raw if arguments.consume == "raw boto3" else consume_cloudjobs
    # Like for like: the raw loop logs nothing, so neither contender logs per message. (Without a
    # logging configuration the worker would print one INFO line per job, an operator's choice.)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print("ready", flush=True)
    cpu, wall = time.process_time(), time.perf_counter()
    consume(arguments.queue_url, arguments.messages, arguments.concurrency, counter)
    result = {
        "seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "requests": dict(counter),
    }
    print(json.dumps(result), flush=True)
    return 0


# -- producers (run in the parent) ----------------------------------------------------------------


def run_round(contender: str, admin: SQSClient, arguments: argparse.Namespace) -> Measurement:
    """One contender, one fresh queue: a child consumes while this process keeps the depth."""
    spec = QueueSpec(name=f"bench-{uuid.uuid4().hex[:10]}", visibility_timeout_seconds=60)
    url = provision_queue(spec, client=admin).queue_url
    producer_requests: Counter[str] = Counter()
    session = counting_session(producer_requests)
    jobs = CloudJobs(settings=Settings(queue_url=url), backend=SqsBackend(queue_url=url, session=session))
    producer_client = session.client("sqs")
    command = [
        sys.executable,
        __file__,
        "--consume",
        contender,
        "--queue-url",
        url,
        "--messages",
        str(arguments.messages),
        "--concurrency",
        str(arguments.concurrency),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        sent = 0
        while sent < arguments.messages:
            depth = int(
                admin.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                    "Attributes"
                ]["ApproximateNumberOfMessages"]
            )
            if depth >= arguments.depth:
                time.sleep(0.01)  # pacing the producer, not synchronising a test
                continue
            batch = min(10, arguments.messages - sent)
            if contender == "raw boto3":
                producer_client.send_message_batch(
                    QueueUrl=url,
                    Entries=[{"Id": str(i), "MessageBody": f'{{"n":{sent + i}}}'} for i in range(batch)],
                )
            else:
                jobs.enqueue_many([("noop", {"n": sent + i}) for i in range(batch)])
            sent += batch
        output = process.stdout.read()
    producer_client.close()
    result = json.loads(output.strip().splitlines()[-1])
    requests = Counter(producer_requests) + Counter(result["requests"])
    return Measurement(arguments.messages, result["seconds"], result["cpu_seconds"], requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cloudjobs vs raw boto3 on a local moto server")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--depth", type=int, default=100, help="queue depth the producer keeps")
    parser.add_argument("--json", metavar="PATH", help="also write parameters, rounds, medians and ratios")
    parser.add_argument("--consume", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--queue-url", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.consume:
        return child(arguments)

    results: dict[str, list[Measurement]] = {name: [] for name in CONTENDERS}
    with LocalAwsServer() as server:
        os.environ.update(local_environment(server.endpoint_url))
        admin = boto3.client("sqs")
        for round_number in range(arguments.rounds):
            # Alternate who goes first, so drift on the shared machine falls on both alike.
            order = CONTENDERS if round_number % 2 == 0 else tuple(reversed(CONTENDERS))
            for name in order:
                measurement = run_round(name, admin, arguments)
                results[name].append(measurement)
                print(
                    f"round {round_number + 1} {name:<10} {measurement.per_second:7.0f} msg/s  "
                    f"{measurement.requests_per_message:.3f} req/msg  "
                    f"{measurement.cpu_per_thousand:.3f} CPU s/1000  {dict(measurement.requests)}",
                    file=sys.stderr,
                )
        admin.close()
    report(results, arguments)
    if arguments.json:
        write_json(arguments.json, results, arguments)
    return 0


def medians(results: dict[str, list[Measurement]]) -> dict[str, dict[str, float]]:
    """Each contender's median of each metric over its rounds."""
    return {
        name: {key: float(statistics.median(float(getattr(m, key)) for m in rounds)) for key in METRICS}
        for name, rounds in results.items()
    }


def ratios(results: dict[str, list[Measurement]]) -> dict[str, float]:
    """cloudjobs' median over the raw loop's median, per metric: the figures the README quotes."""
    middle = medians(results)
    return {key: middle["cloudjobs"][key] / middle["raw boto3"][key] for key in METRICS}


def write_json(path: str, results: dict[str, list[Measurement]], arguments: argparse.Namespace) -> None:
    """Write the run as JSON: parameters, every round of each contender, medians and ratios."""
    document = {
        "parameters": {
            "messages": arguments.messages,
            "rounds": arguments.rounds,
            "concurrency": arguments.concurrency,
            "depth": arguments.depth,
        },
        "rounds": {
            name: [
                {
                    "messages": m.messages,
                    "seconds": m.seconds,
                    "cpu_seconds": m.cpu_seconds,
                    "requests": dict(m.requests),
                }
                for m in rounds
            ]
            for name, rounds in results.items()
        },
        "medians": medians(results),
        "ratios": ratios(results),
    }
    with open(path, "w", encoding="utf-8") as file:
        json.dump(document, file, indent=2)
        file.write("\n")


def report(results: dict[str, list[Measurement]], arguments: argparse.Namespace) -> None:
    """Print the medians and the ratios to the baseline as Markdown tables."""
    base, ours = results["raw boto3"], results["cloudjobs"]
    middle = medians(results)
    rows = [
        ("consume throughput, messages/s", "per_second", "{:.0f}"),
        ("SQS requests per message, end to end", "requests_per_message", "{:.3f}"),
        ("consumer CPU seconds per 1,000 messages", "cpu_per_thousand", "{:.3f}"),
    ]
    print(
        f"\n{arguments.messages} no-op jobs, {arguments.concurrency} polling threads / handlers, queue depth "
        f"held near {arguments.depth}; median of {arguments.rounds} alternating rounds, local moto server\n"
    )
    print("| metric | raw boto3 | cloudjobs | cloudjobs / raw |")
    print("|---|---|---|---|")
    for label, key, fmt in rows:
        b, c = middle["raw boto3"][key], middle["cloudjobs"][key]
        print(f"| {label} | {fmt.format(b)} | {fmt.format(c)} | {c / b:.2f} |")
    operations = sorted({op for m in ours + base for op in m.requests})
    print("\n| requests per message, by operation | raw boto3 | cloudjobs |")
    print("|---|---|---|")
    for operation in operations:
        b = statistics.median(m.requests[operation] / m.messages for m in base)
        c = statistics.median(m.requests[operation] / m.messages for m in ours)
        print(f"| {operation} | {b:.3f} | {c:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
