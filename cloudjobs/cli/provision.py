"""``cloudjobs provision``: create a queue and its DLQ with the redrive policy cloudjobs expects."""

from __future__ import annotations

import click

from cloudjobs.backends.base import MAX_VISIBILITY_TIMEOUT_SECONDS
from cloudjobs.cli.exit_codes import EXIT_OK
from cloudjobs.provisioning import DEFAULT_MAX_RECEIVE_COUNT, DEFAULT_VISIBILITY_TIMEOUT_SECONDS


@click.command(short_help="Create a queue and its DLQ; print their URLs.")
@click.argument("name")
@click.option(
    "--visibility-timeout",
    type=click.IntRange(min=0, max=MAX_VISIBILITY_TIMEOUT_SECONDS),
    default=DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds.",
)
@click.option(
    "--max-receive-count", type=click.IntRange(min=1), default=DEFAULT_MAX_RECEIVE_COUNT, show_default=True
)
def provision(name: str, visibility_timeout: int, max_receive_count: int) -> int:
    """Create queue NAME (end it in .fifo for a FIFO queue) and its DLQ; print their URLs.

    Safe to run again: existing queues are kept and given these attributes. The output lines are
    CLOUDJOBS_QUEUE_URL=... and CLOUDJOBS_DLQ_URL=..., ready for an environment file.
    """
    from cloudjobs.aws_clients import create_client
    from cloudjobs.backends.sqs import wrap_aws_errors
    from cloudjobs.provisioning import QueueSpec, provision_queue

    spec = QueueSpec(
        name=name,
        fifo=name.endswith(".fifo"),
        visibility_timeout_seconds=visibility_timeout,
        max_receive_count=max_receive_count,
    )
    with wrap_aws_errors(spec.name):
        client = create_client("sqs")
    try:
        queue = provision_queue(spec, client=client)
    finally:
        client.close()
    click.echo(f"CLOUDJOBS_QUEUE_URL={queue.queue_url}")
    click.echo(f"CLOUDJOBS_DLQ_URL={queue.dlq_url}")
    return EXIT_OK
