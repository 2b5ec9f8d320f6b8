"""``cloudjobs cancel``: stop a job that should no longer run."""

from __future__ import annotations

import click

from cloudjobs.cli.apps import operator_app
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cloudjobs.cli.options import app_option, json_option
from cloudjobs.cli.output import echo_json
from cloudjobs.idempotency.base import CancelOutcome, Status


@click.command(short_help="Cancel a job: pending never runs, running sees job.cancelled.")
@click.argument("job_id")
@app_option
@json_option
def cancel(job_id: str, app_reference: str | None, as_json: bool) -> int:
    """Cancel job JOB_ID: a pending job never runs; a running one sees job.cancelled.

    The cancellation is recorded in the status table (CLOUDJOBS_IDEMPOTENCY_TABLE). A job with a
    record is cancelled through it; for a job without one a marker is written, which workers and
    Lambda check before running it. Exits 1 when the job had already succeeded or been
    dead-lettered (cancelling an already cancelled job succeeds).

    \b
    JSON output: {"job_id": "...", "outcome": "cancelled" | "requested" | "marked"
      | "already_finished", "status": "<record status>" or null}
    """
    jobs = operator_app(app_reference)
    cancellation = jobs.cancel(job_id)
    status = cancellation.record.status if cancellation.record is not None else None
    if as_json:
        echo_json({"job_id": job_id, "outcome": cancellation.outcome, "status": status})
    else:
        click.echo(_describe(job_id, cancellation.outcome, status))
    is_stopped = cancellation.outcome is not CancelOutcome.ALREADY_FINISHED or status is Status.CANCELLED
    return EXIT_OK if is_stopped else EXIT_FAILED


def _describe(job_id: str, outcome: CancelOutcome, status: Status | None) -> str:
    match outcome:
        case CancelOutcome.CANCELLED:
            return f"cancelled job {job_id}: it will not run"
        case CancelOutcome.REQUESTED:
            return f"job {job_id} is running: asked it to stop (its handler sees job.cancelled)"
        case CancelOutcome.MARKED:
            # No record says whether the id exists, ran already or has yet to arrive: say only that.
            return (
                f"no record of job {job_id} was found (unknown id, a job that keeps none, or one not "
                "started yet): a cancellation marker was written, so it will not run if it has not yet"
            )
        case CancelOutcome.ALREADY_FINISHED:
            state = status.value if status is not None else "finished"
            return f"job {job_id} is already {state}: nothing changed"
