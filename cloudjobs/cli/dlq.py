"""``cloudjobs dlq``: list, redrive and purge the dead-letter queue."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from cloudjobs.cli.apps import operator_app
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cloudjobs.cli.options import app_option, json_option, queue_option, read_duration
from cloudjobs.cli.output import echo_json, render_table
from cloudjobs.dlq.models import RedriveStop

if TYPE_CHECKING:
    from cloudjobs.dlq import DeadJob, Progress, RedriveReport


@click.group()
def dlq() -> None:
    """Inspect, redrive and purge the dead-letter queue.

    Listing never deletes: the messages it reads become visible again when it returns.
    """


@dlq.command("list", short_help="List dead-lettered messages and why they failed.")
@click.option("--type", "job_type", metavar="TYPE", help="Only jobs of this type.")
@click.option("--reason", help="Only messages dead-lettered for this reason (e.g. invalid_payload).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many.")
@queue_option
@app_option
@json_option
def list_command(
    job_type: str | None,
    reason: str | None,
    limit: int,
    queue: str | None,
    app_reference: str | None,
    as_json: bool,
) -> int:
    """List dead-lettered messages with the reason, error and attempts the consumer recorded.

    \b
    JSON output: a list of {"job_id", "type", "reason", "error", "attempts",
    "first_failed_at", "last_failed_at", "message_id", "body", "redrive_count"}
    (times in ISO 8601, null where unknown; body is the message body as it is).
    """
    jobs = operator_app(app_reference)
    dead = jobs.dlq.list(limit=limit, job_type=job_type, reason=reason, queue=queue)
    if as_json:
        echo_json([dead_job_document(job) for job in dead])
    elif not dead:
        click.echo("no matching messages in the dead-letter queue")
    else:
        click.echo(
            render_table(
                ["JOB ID", "TYPE", "REASON", "ATTEMPTS", "LAST FAILED", "ERROR"],
                [[j.job_id, j.type, j.reason, j.attempts, j.last_failed_at, j.error] for j in dead],
            )
        )
    return EXIT_OK


def dead_job_document(job: DeadJob) -> dict[str, Any]:
    """The ``--json`` shape of one dead-lettered message."""
    return {
        "job_id": job.job_id,
        "type": job.type,
        "reason": job.reason,
        "error": job.error,
        "attempts": job.attempts,
        "first_failed_at": job.first_failed_at,
        "last_failed_at": job.last_failed_at,
        "message_id": job.message_id,
        "body": job.body,
        "redrive_count": job.redrive_count,
    }


@dlq.command(short_help="Move dead-lettered messages back to the queue.")
@click.option("--type", "job_type", metavar="TYPE", help="Only jobs of this type.")
@click.option("--reason", help="Only messages dead-lettered for this reason.")
@click.option("--id", "job_ids", metavar="ID", multiple=True, help="Only this job (repeatable).")
@click.option("--dry-run", is_flag=True, help="Report what would move; move nothing.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many messages/s.")
@queue_option
@app_option
@json_option
def redrive(
    job_type: str | None,
    reason: str | None,
    job_ids: tuple[str, ...],
    dry_run: bool,
    rate: float | None,
    queue: str | None,
    app_reference: str | None,
    as_json: bool,
) -> int:
    """Move dead-lettered messages back to the queue, with fresh attempt counters.

    Without filters the whole DLQ moves; with them, only matching messages. Only what the DLQ held
    at the start moves: a moved job that fails again and comes back while the redrive runs is left
    in the DLQ ("returned"), and meeting those ends the redrive. A progress bar shows on stderr
    (when it is a terminal); exits 1 when some messages could not be moved.

    \b
    JSON output: {"moved": n, "skipped": n, "failed": n, "dry_run": bool,
      "job_ids": [...moved, or that would move], "errors": ["..."], "returned": n,
      "stop": "drained" | "met_own_messages" | "moved_start_count" | "move_task_stopped"}
    """
    jobs = operator_app(app_reference)
    with _progress_bar() as progress:
        report = jobs.dlq.redrive(
            job_ids=list(job_ids) or None,
            job_type=job_type,
            reason=reason,
            dry_run=dry_run,
            rate=rate,
            on_progress=progress,
            queue=queue,
        )
    if as_json:
        echo_json(redrive_document(report))
    else:
        click.echo(render_redrive(report))
    return EXIT_OK if report.is_complete else EXIT_FAILED


def redrive_document(report: RedriveReport) -> dict[str, Any]:
    """The ``--json`` shape of a redrive's report."""
    return {
        "moved": report.moved,
        "skipped": report.skipped,
        "failed": report.failed,
        "dry_run": report.dry_run,
        "job_ids": [job.job_id or job.message_id for job in report.jobs],
        "errors": list(report.errors),
        "returned": report.returned,
        "stop": report.stop.value,
    }


def render_redrive(report: RedriveReport) -> str:
    """A redrive's report for people: the jobs (on a dry run), the counts, then any errors."""
    lines: list[str] = []
    if report.dry_run and report.jobs:
        rows = [[job.job_id or job.message_id, job.type, job.reason] for job in report.jobs]
        lines += [render_table(["JOB ID", "TYPE", "REASON"], rows), ""]
    verb = "would move" if report.dry_run else "moved"
    lines.append(f"{verb} {report.moved}, skipped {report.skipped}, failed {report.failed}")
    if report.returned:
        lines.append(
            f"{report.returned} moved came back to the dead-letter queue while it ran (failed again):"
            " left there, not moved twice"
        )
    if report.stop in _STOPS:
        lines.append(_STOPS[report.stop])
    lines += [f"error: {error}" for error in report.errors]
    return "\n".join(lines)


_STOPS: dict[RedriveStop, str] = {
    RedriveStop.MET_OWN_MESSAGES: "stopped on meeting messages this redrive had moved itself",
    RedriveStop.MOVED_START_COUNT: (
        "stopped: the move task was cancelled once it had moved what the dead-letter queue held at its start"
    ),
}
"""The stops worth a line of their own (a drained queue is the usual end; a stopped task has an error)."""


class _ProgressBar:
    """Feeds a redrive's progress reports into a click progress bar on stderr (opened on the first)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._done = 0

    def __call__(self, progress: Progress) -> None:
        if self._bar is None:
            self._bar = click.progressbar(length=progress.total, label="redriving", file=sys.stderr)
            self._bar.__enter__()
        self._bar.update(progress.done - self._done)
        self._done = progress.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


@contextmanager
def _progress_bar() -> Iterator[_ProgressBar | None]:
    # Scripts and logs get the final report only: a bar redraws itself with carriage returns.
    if not sys.stderr.isatty():
        yield None
        return
    bar = _ProgressBar()
    try:
        yield bar
    finally:
        bar.close()


@dlq.command(short_help="Delete dead-lettered messages (needs --yes).")
@click.option("--type", "job_type", metavar="TYPE", help="Only jobs of this type.")
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=read_duration,
    help="Only messages that failed longer ago than this (30s, 15m, 12h, 7d).",
)
@click.option("--yes", is_flag=True, help="Confirm: messages are deleted for good.")
@queue_option
@json_option
@app_option
@click.pass_context
def purge(
    ctx: click.Context,
    job_type: str | None,
    older_than: timedelta | None,
    yes: bool,
    queue: str | None,
    as_json: bool,
    app_reference: str | None,
) -> int:
    """Delete dead-lettered messages for good; refuses to run without --yes, and without --queue
    when the app has several queues.

    Without filters the whole DLQ is purged at once (SQS PurgeQueue: once a minute per queue on AWS).

    \b
    JSON output: {"purged": n}
    """
    if not yes:
        raise click.UsageError("refusing to delete messages without --yes", ctx=ctx)
    jobs = operator_app(app_reference)
    purged = jobs.dlq.purge(job_type=job_type, older_than=older_than, queue=queue)
    if as_json:
        echo_json({"purged": purged})
    else:
        click.echo(f"purged {purged} messages from the dead-letter queue")
    return EXIT_OK
