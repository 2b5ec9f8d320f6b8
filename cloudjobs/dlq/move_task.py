"""Redrive with a server-side move task (SQS StartMessageMoveTask), polled until it ends.

Used for an unfiltered redrive on a backend that has move tasks. SQS moves the messages itself (up
to 500 a second), which is the fastest way to empty a large DLQ, but it copies bodies and
attributes unchanged. So, unlike a redrive by receiving, this path does *not*:

- add one to the envelope's ``redrive_count``;
- reset the envelope's ``attempt_offset`` (a job that had been re-sent by a deferral keeps its
  offset; its attempt number is held at 1 until its receive count passes the offset);
- drop the ``cloudjobs.dead_letter`` record (the consumer ignores it on the source queue, and
  replaces it if the job is dead-lettered again) or record ``cloudjobs.first_failed_at``.

SQS does start each moved message afresh: a new message id, a new enqueue time (so a new retention
period) and a receive count from zero, so attempts restart at 1 for a job whose offset is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cloudjobs.backends.base import DeadLetterMover, MoveTask, MoveTaskStatus
from cloudjobs.dlq.models import Progress, RedriveReport


def redrive_with_move_task(
    mover: DeadLetterMover,
    *,
    max_messages_per_second: int | None,
    poll_interval: timedelta,
    sleep: Callable[[float], None],
    on_progress: Callable[[Progress], None] | None,
) -> RedriveReport | None:
    """Start a move task and wait for it to finish; None when the server has no move tasks.

    One task runs per queue at a time, so the newest task listed after the start is this one.

    Raises:
        BackendError: the task could not be started or listed.
    """
    handle = mover.start_dead_letter_move(max_messages_per_second=max_messages_per_second)
    if handle is None:
        return None
    while True:
        tasks = mover.dead_letter_moves()
        task = tasks[0] if tasks else None
        if task is not None:
            if on_progress is not None:
                on_progress(Progress(done=task.messages_moved, total=task.messages_to_move))
            if task.status.is_finished:
                return _report(task, handle)
        # The task may not be listed yet just after the start: keep polling.
        sleep(poll_interval.total_seconds())


def _report(task: MoveTask, handle: str) -> RedriveReport:
    if task.status is MoveTaskStatus.COMPLETED:
        return RedriveReport(moved=task.messages_moved, skipped=0, failed=0)
    left = max((task.messages_to_move or 0) - task.messages_moved, 0)
    why = task.failure_reason or "no reason given"
    error = f"move task {handle} {task.status.value.lower()}: {why}"
    return RedriveReport(moved=task.messages_moved, skipped=0, failed=left, errors=(error,))
