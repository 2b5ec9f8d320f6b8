"""``cloudjobs worker``: run a worker for the user's CloudJobs app until SIGTERM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import click

from cloudjobs.cli.apps import load_app
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from cloudjobs.cli.options import serve_metrics

T = TypeVar("T")


def parse_queue_options(values: Sequence[str]) -> dict[str, int] | list[str] | None:
    """The ``--queue`` options: weights by name (``critical=6``), names in strict order
    (``critical``), or None when none is given.

    Raises:
        ValueError: weighted and unweighted queues are mixed, a weight is not a positive integer,
            or a queue is named twice.
    """
    if not values:
        return None
    entries = [value.partition("=") for value in values]
    names = [name.strip() for name, _, _ in entries]
    if len(set(names)) < len(names):
        repeated = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"queue {repeated!r} is named twice")
    weighted = [separator for _, separator, _ in entries]
    if not any(weighted):
        return names
    if not all(weighted):
        raise ValueError(
            "give every queue a weight (--queue critical=6 --queue default=3) or none "
            "(--queue critical --queue default: strict order), not a mix"
        )
    return {
        name: _positive(weight, f"the weight of queue {name!r}")
        for name, (_, _, weight) in zip(names, entries, strict=True)
    }


def parse_queue_concurrency(values: Sequence[str]) -> dict[str, int] | None:
    """The ``--queue-concurrency NAME=N`` options, or None when none is given.

    Raises:
        ValueError: an option is not NAME=N with N a positive integer.
    """
    caps: dict[str, int] = {}
    for value in values:
        name, separator, cap = (part.strip() for part in value.partition("="))
        if not separator or not name:
            raise ValueError(f"{value!r} is not NAME=N (e.g. bulk=4)")
        caps[name] = _positive(cap, f"the concurrency of queue {name!r}")
    return caps or None


def _positive(text: str, what: str) -> int:
    try:
        number = int(text.strip())
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{what} must be a positive integer, not {text.strip()!r}")
    return number


def _read(
    parse: Callable[[Sequence[str]], T],
) -> Callable[[click.Context, click.Parameter, Sequence[str]], T]:
    def read(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> T:
        try:
            return parse(values)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return read


@click.command(short_help="Run a worker for an app until SIGTERM.")
@click.argument("app_reference", metavar="APP")
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME[=WEIGHT]",
    callback=_read(parse_queue_options),
    help="A queue of the app to consume; repeat for several. With weights (critical=6) the handlers "
    "are shared by weight; without (critical), in strict order, the first queue with work first, "
    "lower queues still getting one job start in ten. Default: the default queue alone.",
)
@click.option(
    "--queue-concurrency",
    "queue_concurrency",
    multiple=True,
    metavar="NAME=N",
    callback=_read(parse_queue_concurrency),
    help="At most N handlers on queue NAME at once (repeatable), leaving the rest to the others.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Handlers run at once, over every queue (CLOUDJOBS_CONCURRENCY).",
)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", default="INFO", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65_535),
    help="Serve Prometheus metrics on this port at /metrics (needs the otel extra).",
)
@click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65_535),
    help="Serve GET /healthz on this port: 200 while the worker can take work, 503 when it is "
    "stalled (0 picks a free port, logged at start-up).",
)
@click.option(
    "--health-address",
    default="127.0.0.1",
    show_default=True,
    help="Address of the health endpoint (0.0.0.0 for probes from outside the container).",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Report the worker stalled when its receive loop completes no poll for this long "
    "(CLOUDJOBS_STALL_TIMEOUT_SECONDS, default 120).",
)
def worker(
    app_reference: str,
    queues: dict[str, int] | list[str] | None,
    queue_concurrency: dict[str, int] | None,
    concurrency: int | None,
    log_format: str,
    log_level: str,
    metrics_port: int | None,
    health_port: int | None,
    health_address: str,
    stall_timeout: float | None,
) -> int:
    """Run a worker for APP (the CloudJobs instance as module:attribute, e.g. myapp.jobs:jobs).

    The worker long-polls the queues configured by CLOUDJOBS_* (the default queue, or those given
    with --queue, one long poll per queue) and runs jobs until SIGTERM or Ctrl-C, then finishes
    running jobs within CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS; a second SIGTERM or Ctrl-C stops
    waiting for them.

    \b
    Exit codes:
      0    stopped cleanly
      1    jobs were still running at the shutdown deadline (their messages
           reappear after the visibility timeout)
      2    configuration error (the queue has no dead-letter queue, ...)
      130  forced by a second SIGINT; 143 by a second SIGTERM
    """
    from cloudjobs.logs import configure_logging
    from cloudjobs.runtimes.worker import Worker

    configure_logging(level=log_level, json_lines=log_format == "json")
    if not serve_metrics(metrics_port):
        return EXIT_USAGE
    app = load_app(app_reference)
    report = Worker(
        app,
        queues=queues,
        concurrency=concurrency,
        queue_concurrency=queue_concurrency,
        stall_timeout=timedelta(seconds=stall_timeout) if stall_timeout is not None else None,
        health_port=health_port,
        health_address=health_address,
    ).run()
    if report.forced_by is not None:
        # As a shell reports a process ended by the signal: 128 + its number.
        return 128 + int(report.forced_by)
    if report.abandoned:
        click.echo(
            f"cloudjobs: {report.abandoned} jobs were still running at the shutdown deadline; their "
            "messages reappear after the visibility timeout",
            err=True,
        )
        return EXIT_FAILED
    return EXIT_OK
