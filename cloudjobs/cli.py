"""The ``cloudjobs`` command: ``worker``, ``demo`` and ``provision``. Nothing imports this module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from cloudjobs.app import CloudJobs
from cloudjobs.errors import CloudjobsError, ConfigurationError
from cloudjobs.provisioning import DEFAULT_MAX_RECEIVE_COUNT, DEFAULT_VISIBILITY_TIMEOUT_SECONDS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code.

    Exit codes: 0 success, 1 a run that failed (e.g. the demo did not settle as expected, or the
    queue service refused a request), 2 a usage or configuration error.
    """
    parser = _parser()
    arguments = parser.parse_args(argv)
    try:
        code: int = arguments.run(arguments)
    except ConfigurationError as exc:
        print(f"cloudjobs: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CloudjobsError as exc:
        print(f"cloudjobs: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudjobs", description="Background jobs on managed cloud queues.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run a worker for a CloudJobs app until SIGTERM")
    worker.add_argument("app", help="the CloudJobs instance as module:attribute, e.g. myapp.jobs:jobs")
    worker.add_argument("--concurrency", type=int, help="handlers run at once (CLOUDJOBS_CONCURRENCY)")
    worker.add_argument("--log-format", choices=("json", "text"), default="json")
    worker.add_argument("--log-level", default="INFO")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port at /metrics (needs the otel extra)",
    )
    worker.set_defaults(run=_run_worker)

    demo = commands.add_parser("demo", help="run sample jobs on an embedded local AWS (no account needed)")
    demo.set_defaults(run=_run_demo)

    provision = commands.add_parser(
        "provision", help="create a queue and its DLQ with the redrive policy cloudjobs expects"
    )
    provision.add_argument("name", help="queue name (end it in .fifo for a FIFO queue)")
    provision.add_argument(
        "--visibility-timeout", type=int, default=DEFAULT_VISIBILITY_TIMEOUT_SECONDS, help="seconds"
    )
    provision.add_argument("--max-receive-count", type=int, default=DEFAULT_MAX_RECEIVE_COUNT)
    provision.set_defaults(run=_run_provision)
    return parser


def load_app(reference: str) -> CloudJobs:
    """Import ``module:attribute`` and return the CloudJobs instance it names.

    Raises:
        ConfigurationError: the reference is malformed, cannot be imported, or is not a CloudJobs.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected module:attribute, got {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, CloudJobs):
        raise ConfigurationError(f"{reference!r} is not a CloudJobs instance")
    return app


def _run_worker(arguments: argparse.Namespace) -> int:
    from cloudjobs.logs import configure_logging

    configure_logging(level=arguments.log_level, json_lines=arguments.log_format == "json")
    if arguments.metrics_port is not None:
        from cloudjobs.telemetry.prometheus import serve_prometheus

        try:
            serve_prometheus(arguments.metrics_port)
        except ImportError as exc:
            print(f"cloudjobs: {exc}", file=sys.stderr)
            return EXIT_USAGE
    app = load_app(arguments.app)
    app.worker(concurrency=arguments.concurrency).run()
    return EXIT_OK


def _run_demo(arguments: argparse.Namespace) -> int:
    from cloudjobs.demo import run_demo
    from cloudjobs.logs import configure_logging

    configure_logging(level="ERROR", json_lines=False)
    report = run_demo()
    return EXIT_OK if report.is_as_expected else EXIT_FAILED


def _run_provision(arguments: argparse.Namespace) -> int:
    from cloudjobs.aws_clients import create_client
    from cloudjobs.backends.sqs import wrap_aws_errors
    from cloudjobs.provisioning import QueueSpec, provision_queue

    spec = QueueSpec(
        name=arguments.name,
        fifo=arguments.name.endswith(".fifo"),
        visibility_timeout_seconds=arguments.visibility_timeout,
        max_receive_count=arguments.max_receive_count,
    )
    with wrap_aws_errors(spec.name):
        client = create_client("sqs")
    try:
        queue = provision_queue(spec, client=client)
    finally:
        client.close()
    print(f"CLOUDJOBS_QUEUE_URL={queue.queue_url}")
    print(f"CLOUDJOBS_DLQ_URL={queue.dlq_url}")
    return EXIT_OK
