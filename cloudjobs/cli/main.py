"""The ``cloudjobs`` command group and its error handling: every expected error is one line on stderr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import click

from cloudjobs.cli.cancel import cancel
from cloudjobs.cli.dashboard import dashboard
from cloudjobs.cli.demo import demo
from cloudjobs.cli.dlq import dlq
from cloudjobs.cli.enqueue import enqueue
from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from cloudjobs.cli.local import local
from cloudjobs.cli.provision import provision
from cloudjobs.cli.relay import relay
from cloudjobs.cli.scheduler import scheduler
from cloudjobs.cli.schedules import schedules
from cloudjobs.cli.stats import stats
from cloudjobs.cli.worker import worker
from cloudjobs.errors import (
    BackendUnavailableError,
    CloudjobsError,
    ConfigurationError,
    CredentialsError,
    InvalidDelayError,
    PayloadTooLargeError,
    PayloadValidationError,
    QueueNotFoundError,
    UnknownJobError,
)

EXIT_INTERRUPTED: Final = 130
"""Stopped with Ctrl-C (128 + SIGINT), as shells report it."""

_INPUT_ERRORS: Final = (UnknownJobError, PayloadValidationError, PayloadTooLargeError, InvalidDelayError)
# click ≥ 8.2 reports a group called without a command as this usage error, whose message is the help.
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


@click.group(name="cloudjobs", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cloudjobs", prog_name="cloudjobs")
def cli() -> None:
    """Background jobs on managed cloud queues: run workers and operate the queues.

    Commands other than worker, scheduler, schedules, demo, local and provision work on the queue
    configured by the CLOUDJOBS_* environment (CLOUDJOBS_QUEUE_URL or CLOUDJOBS_QUEUE_NAME,
    CLOUDJOBS_DLQ_URL, CLOUDJOBS_IDEMPOTENCY_TABLE), or on your app's with --app module:attribute.
    AWS itself is configured as for any boto3 program (AWS_REGION, AWS_ENDPOINT_URL, credentials).

    \b
    Exit codes:
      0  success (stats: the queue is healthy)
      1  an operation failed (queue missing, endpoint unreachable, service error,
         messages left behind) or stats found the queue unhealthy
      2  usage or configuration error (bad arguments or JSON, missing settings
         or credentials, purge without --yes)
      130  interrupted with Ctrl-C
    """


cli.add_command(worker)
cli.add_command(demo)
cli.add_command(local)
cli.add_command(provision)
cli.add_command(enqueue)
cli.add_command(dlq)
cli.add_command(cancel)
cli.add_command(stats)
cli.add_command(scheduler)
cli.add_command(schedules)
cli.add_command(dashboard)
cli.add_command(relay)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); returns the exit code.

    Expected errors (usage, configuration, credentials, a missing queue, an unreachable endpoint,
    a refused request) print one line to stderr and no traceback.
    """
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None, prog_name="cloudjobs", standalone_mode=False
        )
    except _NO_ARGS_IS_HELP as exc:
        exc.show()
        return EXIT_USAGE
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "cloudjobs"
        return _fail(f"{command}: {exc.format_message()} (see '{command} --help')", EXIT_USAGE)
    except click.ClickException as exc:
        return _fail(f"cloudjobs: {exc.format_message()}", exc.exit_code)
    except click.Abort:
        return _fail("cloudjobs: interrupted", EXIT_INTERRUPTED)
    except CloudjobsError as exc:
        message, code = describe(exc)
        return _fail(f"cloudjobs: {message}", code)
    return result if isinstance(result, int) else EXIT_OK


def describe(error: CloudjobsError) -> tuple[str, int]:
    """The one-line message and exit code for an expected error."""
    if isinstance(error, CredentialsError):
        return str(error), EXIT_USAGE
    if isinstance(error, ConfigurationError):
        return f"configuration error: {error}", EXIT_USAGE
    if isinstance(error, _INPUT_ERRORS):
        return f"invalid input: {error}", EXIT_USAGE
    if isinstance(error, QueueNotFoundError):
        return (
            f"{error} at the configured endpoint (check CLOUDJOBS_QUEUE_URL or CLOUDJOBS_QUEUE_NAME, "
            "AWS_REGION and AWS_ENDPOINT_URL)",
            EXIT_FAILED,
        )
    if isinstance(error, BackendUnavailableError):
        return str(error), EXIT_FAILED
    return f"{type(error).__name__}: {error}", EXIT_FAILED


def _fail(line: str, code: int) -> int:
    # One line whatever the message holds: scripts and log collectors read stderr line by line.
    click.echo(" ".join(line.split()), err=True)
    return code
