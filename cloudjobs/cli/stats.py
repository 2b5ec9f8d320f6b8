"""``cloudjobs stats``: queue depths and health, once or refreshed in place."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from cloudjobs.cli.apps import operator_app
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cloudjobs.cli.options import app_option, json_option, queue_option
from cloudjobs.cli.output import echo_json, format_age, render_table, to_json_value

if TYPE_CHECKING:
    from cloudjobs.app import CloudJobs
    from cloudjobs.stats import QueueStats


@click.command(short_help="Queue depths and health; exits 1 when unhealthy.")
@click.option(
    "--watch", is_flag=True, help="Refresh in place until Ctrl-C; exits with the last check's code."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--age",
    "include_age",
    is_flag=True,
    help="Also read the oldest message's age from CloudWatch (one GetMetricData per check).",
)
@click.option("--all-queues", is_flag=True, help="Every queue of the app, one row each.")
@queue_option
@app_option
@json_option
def stats(
    watch: bool,
    interval: float,
    include_age: bool,
    all_queues: bool,
    queue: str | None,
    app_reference: str | None,
    as_json: bool,
) -> int:
    """Show the queue's depth, in-flight and delayed counts, DLQ depth and oldest message age.

    --queue NAME reads one of the app's named queues; --all-queues reads every queue (and exits 1
    when any is unhealthy).

    Exits 1 when a threshold flags the queue unhealthy: more than CLOUDJOBS_MAX_DLQ_DEPTH messages
    in the DLQ (default 0), or, with --age, an oldest message older than
    CLOUDJOBS_MAX_OLDEST_AGE_SECONDS; so the command works as a health check. An age that cannot be
    read shows as unknown and never trips a threshold.

    \b
    JSON output: {"queue": "...", "visible": n, "in_flight": n, "delayed": n,
      "dlq_depth": n or null, "oldest_message_age_seconds": s or null,
      "healthy": bool, "findings": [{"name", "value", "limit", "message"}]}
    With --all-queues, a list of such documents. With --watch --json, one document per line per
    refresh.
    """
    if all_queues and queue is not None:
        raise click.UsageError("give --queue or --all-queues, not both")
    jobs = operator_app(app_reference)
    names: list[str | None] = list(jobs.queue_names) if all_queues else [queue]

    def check(watching: bool) -> int:
        return _check(
            jobs, names, include_age=include_age, as_json=as_json, watching=watching, many=all_queues
        )

    if not watch:
        return check(False)
    return repeat_until_interrupted(lambda: check(True), interval=interval)


def repeat_until_interrupted(
    check: Callable[[], int], *, interval: float, pause: Callable[[float], None] = time.sleep
) -> int:
    """Run ``check`` now and then every ``interval`` seconds until Ctrl-C; returns its last result.

    A Ctrl-C during the first check is not caught (there is no result to return yet).
    """
    code = check()
    try:
        while True:
            pause(interval)
            code = check()
    except KeyboardInterrupt:
        return code


def _check(
    jobs: CloudJobs,
    queues: list[str | None],
    *,
    include_age: bool,
    as_json: bool,
    watching: bool,
    many: bool,
) -> int:
    checked = [jobs.stats(include_age=include_age, queue=queue) for queue in queues]
    documents = [stats_document(current) for current in checked]
    document: Any = documents if many else documents[0]
    if as_json and watching:
        click.echo(json.dumps(to_json_value(document), sort_keys=True))
    elif as_json:
        echo_json(document)
    else:
        if watching:
            click.clear()
        click.echo(render_stats(*checked))
    return EXIT_OK if all(current.is_healthy for current in checked) else EXIT_FAILED


def stats_document(current: QueueStats) -> dict[str, Any]:
    """The ``--json`` shape of one check."""
    findings = current.unhealthy_findings()
    return {
        "queue": current.queue,
        "visible": current.visible,
        "in_flight": current.in_flight,
        "delayed": current.delayed,
        "dlq_depth": current.dlq_depth,
        "oldest_message_age_seconds": current.oldest_message_age,
        "healthy": not findings,
        "findings": [
            {"name": finding.name, "value": finding.value, "limit": finding.limit, "message": finding.message}
            for finding in findings
        ],
    }


def render_stats(*checked: QueueStats) -> str:
    """One check of one or more queues as a table and a health line, for people."""
    table = render_table(
        ["QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED", "DLQ", "OLDEST"],
        [
            [
                current.queue,
                current.visible,
                current.in_flight,
                current.delayed,
                current.dlq_depth,
                format_age(current.oldest_message_age),
            ]
            for current in checked
        ],
    )
    findings = [finding for current in checked for finding in current.unhealthy_findings()]
    health = "healthy" if not findings else "UNHEALTHY: " + "; ".join(f.message for f in findings)
    return f"{table}\n{health}"
