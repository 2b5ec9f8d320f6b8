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

A task does not stop at what the DLQ held when it started: with a worker running and a handler that
still fails, the jobs it moved come back to the DLQ and it moves them again, for as long as it runs.
So the task is cancelled (CancelMessageMoveTask) at the first poll that shows it has moved the count
SQS read when it started (``ApproximateNumberOfMessagesToMove``). What it moved between that poll
and the one before may include such returning copies, moved a second time: a shorter
``poll_interval`` (or a ``rate``) narrows that window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from cloudjobs.backends.base import DeadLetterMover, MoveTask, MoveTaskStatus
from cloudjobs.dlq.models import Progress, RedriveReport, RedriveStop
from cloudjobs.errors import BackendError


def redrive_with_move_task(
    mover: DeadLetterMover,
    *,
    max_messages_per_second: int | None,
    poll_interval: timedelta,
    sleep: Callable[[float], None],
    on_progress: Callable[[Progress], None] | None,
) -> RedriveReport | None:
    """Start a move task and wait for it to end; None when the server has no move tasks.

    One task runs per queue at a time, so the newest task listed after the start is this one. It
    is cancelled once it has moved the count SQS read at its start (see the module notes).

    Raises:
        BackendError: the task could not be started or listed, or it could not be cancelled and is
            still running.
    """
    handle = mover.start_dead_letter_move(max_messages_per_second=max_messages_per_second)
    if handle is None:
        return None
    cancelled = False
    while True:
        task = _newest(mover)
        if task is not None:
            if on_progress is not None:
                on_progress(Progress(done=task.messages_moved, total=task.messages_to_move))
            if task.status.is_finished:
                return _report(task, handle, cancelled=cancelled)
            if not cancelled and _has_moved_start_count(task):
                cancelled = True
                ended = _cancel(mover, handle)
                if ended is not None:
                    return _report(ended, handle, cancelled=False)
                # CANCELLING now: poll until SQS reports it CANCELLED, with its final count.
        # The task may not be listed yet just after the start: keep polling.
        sleep(poll_interval.total_seconds())


def _newest(mover: DeadLetterMover) -> MoveTask | None:
    tasks = mover.dead_letter_moves()
    return tasks[0] if tasks else None


def _has_moved_start_count(task: MoveTask) -> bool:
    return (
        task.status is MoveTaskStatus.RUNNING
        and task.messages_to_move is not None
        and task.messages_moved >= task.messages_to_move
    )


def _cancel(mover: DeadLetterMover, handle: str) -> MoveTask | None:
    """Cancel the task; the task as listed when SQS refused because it had just ended, else None."""
    try:
        mover.cancel_dead_letter_move(handle)
    except BackendError:
        # SQS refuses to cancel a task that is no longer running: it ended between the two calls.
        task = _newest(mover)
        if task is None or not task.status.is_finished:
            raise
        return task
    return None


def _report(task: MoveTask, handle: str, *, cancelled: bool) -> RedriveReport:
    if task.status is MoveTaskStatus.COMPLETED:
        return RedriveReport(moved=task.messages_moved, skipped=0, failed=0)
    if task.status is MoveTaskStatus.CANCELLED and cancelled:
        return RedriveReport(
            moved=task.messages_moved, skipped=0, failed=0, stop=RedriveStop.MOVED_START_COUNT
        )
    left = max((task.messages_to_move or 0) - task.messages_moved, 0)
    why = task.failure_reason or "no reason given"
    error = f"move task {handle} {task.status.value.lower()}: {why}"
    return RedriveReport(
        moved=task.messages_moved,
        skipped=0,
        failed=left,
        errors=(error,),
        stop=RedriveStop.MOVE_TASK_STOPPED,
    )
