"""``cloudjobs local``: a local AWS with a queue, its DLQ and the table, for your own app, until Ctrl-C."""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Final

import click

from cloudjobs.cli.exit_codes import EXIT_FAILED, EXIT_OK
from cloudjobs.provisioning import QueueSpec, TableSpec

DEFAULT_LOCAL_PORT: Final = 4566
"""The port local AWS endpoints conventionally use; fixed, so the printed variables stay valid across runs."""
DEFAULT_QUEUE: Final = "jobs"
READY_LINE: Final = "# cloudjobs local is ready: Ctrl-C stops it (its queues and tables are in memory)"
"""The last line on stdout, a shell comment: everything above it is ``export`` lines."""


@click.command(short_help="Run a local AWS with a queue, its DLQ and the table until Ctrl-C.")
@click.option(
    "--port",
    type=click.IntRange(min=1, max=65_535),
    default=DEFAULT_LOCAL_PORT,
    show_default=True,
    help="Port on 127.0.0.1.",
)
@click.option("--queue", "queue_name", default=DEFAULT_QUEUE, show_default=True, help="The queue's name.")
@click.option("--table", help="The idempotency and status table's name.  [default: QUEUE-idempotency]")
def local(port: int, queue_name: str, table: str | None) -> int:
    """Start moto on 127.0.0.1:PORT, create a queue, its DLQ and the table, and print the variables.

    The output is `export` lines (endpoint, region, dummy credentials, CLOUDJOBS_QUEUE_URL,
    CLOUDJOBS_DLQ_URL, CLOUDJOBS_IDEMPOTENCY_TABLE): paste them into another shell and run your app
    there, for example `cloudjobs worker your.module:jobs`. Runs until Ctrl-C or SIGTERM, then stops
    the server and exits 0; everything it held is gone. Exits 2 when the port is taken. Needs the
    local extra (pip install 'cloudjobs[local]').
    """
    from cloudjobs.local import LocalAwsServer, local_environment

    # Checked before the server starts: a bad name must not cost a start and a stop.
    queue = QueueSpec(queue_name, fifo=queue_name.endswith(".fifo"))
    table_spec = TableSpec(table or f"{queue_name.removesuffix('.fifo')}-idempotency")
    with _stopped_by_sigterm(), LocalAwsServer(port=port) as server:
        environment = local_environment(server.endpoint_url)
        environment.update(_provision(environment, queue, table_spec))
        for name, value in environment.items():
            click.echo(f"export {name}={shlex.quote(value)}")
        click.echo(READY_LINE)
        try:
            code = server.wait()
        except KeyboardInterrupt:
            return EXIT_OK
    click.echo(f"cloudjobs local: the server stopped by itself (exit code {code})", err=True)
    return EXIT_FAILED


def _provision(environment: dict[str, str], queue: QueueSpec, table: TableSpec) -> dict[str, str]:
    """Create the queue, its DLQ and the table on the local server; the CLOUDJOBS_* variables."""
    import boto3

    from cloudjobs.provisioning import provision_queue, provision_table

    # This process's own environment is left alone: the clients get the local one explicitly.
    session = boto3.session.Session(
        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
        region_name=environment["AWS_REGION"],
    )
    sqs = session.client("sqs", endpoint_url=environment["AWS_ENDPOINT_URL"])
    dynamodb = session.client("dynamodb", endpoint_url=environment["AWS_ENDPOINT_URL"])
    try:
        provisioned = provision_queue(queue, client=sqs)
        provision_table(table, client=dynamodb)
    finally:
        sqs.close()
        dynamodb.close()
    return {
        "CLOUDJOBS_QUEUE_URL": provisioned.queue_url,
        "CLOUDJOBS_DLQ_URL": provisioned.dlq_url,
        "CLOUDJOBS_IDEMPOTENCY_TABLE": table.name,
    }


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM interrupts as Ctrl-C does (a KeyboardInterrupt), so both stop cleanly."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
