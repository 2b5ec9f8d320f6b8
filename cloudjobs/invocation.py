"""How a runtime has the pipeline invoke handlers: inline, on a worker slot with its deadline, on a
shared event loop.

The pipeline (:meth:`cloudjobs.consumer.Consumer.run`) is the same for every runtime; an
:class:`Invocation` is what differs:

================ ==================================== ======================================
runtime          sync handlers                        async handlers
================ ==================================== ======================================
``drain``        inline, no timeout enforced          ``asyncio.run`` per job, with timeout
Lambda           inline (the invocation's timeout)    the shared :class:`EventLoopThread`
ECS worker       inline on a slot, deadline fired by  the shared :class:`EventLoopThread`
                 the heartbeat; leases renewed there
================ ==================================== ======================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

from cloudjobs.errors import JobTimeoutError
from cloudjobs.job import reset_current_job, set_current_job
from cloudjobs.run import Prepared, Run

if TYPE_CHECKING:
    import asyncio

    from cloudjobs.middleware import RunHandle

T = TypeVar("T")


class RunMonitor(Protocol):
    """What keeps a worker's runs alive: fires deadlines and renews leases (the worker's heartbeat)."""

    def call_at(self, delay: timedelta, action: Callable[[], None]) -> Callable[[], None]:
        """Run ``action`` after ``delay`` (on the monitor's thread); returns a function that cancels it."""
        ...

    def keep_lease(self, receipt: str, renew: Callable[[], None]) -> None:
        """Call ``renew`` on every beat until :meth:`drop_lease`."""
        ...

    def drop_lease(self, receipt: str) -> None:
        """Stop renewing what was kept for ``receipt``."""
        ...


class EventLoopThread:
    """One asyncio event loop on a daemon thread, started on first use, shared by every async run.

    Async clients a handler keeps between jobs stay bound to the loop they were created on, so the
    worker and the Lambda runtime keep one loop for their whole life rather than one per job.

    Args:
        name: the thread's name.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coroutine: Coroutine[object, object, T]) -> T:
        """Run ``coroutine`` on the loop and wait for its result (or exception) in this thread."""
        import asyncio  # loaded by the first async handler

        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True)
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def close(self, *, timeout: float | None = None) -> None:
        """Stop the loop and close it once its thread ended (a later :meth:`run` starts a new one).

        Args:
            timeout: the longest to wait for the thread, in seconds (None: as long as it takes); a
                coroutine that blocks the loop past it leaves the loop to end by itself.
        """
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


@dataclass(frozen=True, slots=True)
class Invocation:
    """How handlers are invoked.

    Attributes:
        loop: where async handlers run; None runs each on its own loop (``asyncio.run``).
        monitor: fires sync handlers' deadlines and renews what runs hold; None enforces no sync
            timeout (the caller's own limit applies, as a Lambda function's timeout does).
        time_left: how long runs may still last, when the runtime knows it (a Lambda invocation's
            remaining time); None: the monitor renews what they hold instead.
    """

    loop: EventLoopThread | None = None
    monitor: RunMonitor | None = None
    time_left: Callable[[], timedelta] | None = None

    def run_coroutine(self, coroutine: Coroutine[object, object, T]) -> T:
        """Run an async handler's coroutine to its end."""
        if self.loop is None:
            import asyncio

            return asyncio.run(coroutine)
        return self.loop.run(coroutine)


INLINE = Invocation()
"""Sync handlers in the calling thread with no timeout enforced, async ones on a loop of their own."""


def call_handler(run: Run) -> tuple[object, BaseException | None]:
    r"""Call a sync handler in this thread (see :func:`running`); returns its result, or what it raised.

    Anything it raises is the attempt's failure, ``SystemExit``, ``KeyboardInterrupt`` and the other
    ``BaseException``\ s included: a handler cannot end the thread that runs it.
    """
    prepared = run.prepared
    assert prepared is not None
    if not run.handles:
        # No middleware hook can wrap the call (no trace started, no other middleware): what
        # running() does, without its object and hooks.
        token = set_current_job(prepared.job)
        run.has_started = True
        run.started = time.perf_counter()
        definition = prepared.definition
        try:
            # _arguments(prepared), without its call
            if definition.takes_job:
                return definition.function(prepared.payload, prepared.job), None
            return definition.function(prepared.payload), None
        except BaseException as exc:  # The attempt's failure, whatever the handler raised.
            return None, exc
        finally:
            reset_current_job(token)
    try:
        with running(run):
            return prepared.definition.function(*_arguments(prepared)), None
    except BaseException as exc:  # The attempt's failure, whatever the handler raised.
        return None, exc


async def call_handler_async(run: Run) -> object:
    """Await an async handler as :func:`call_handler` calls a sync one, cancelling it at its timeout.

    Raises:
        JobTimeoutError: the handler ran past its timeout.
        HandlerExit: the handler raised a ``BaseException`` that is not an ``Exception`` (carried as
            its ``error``); raised on the loop as such, it would stop the loop every job shares.
    """
    import asyncio

    prepared = run.prepared
    assert prepared is not None
    try:
        # Entered before wait_for: the handler's task copies this context, span included.
        with running(run):
            return await asyncio.wait_for(
                _guarded(prepared.definition.function(*_arguments(prepared))),
                prepared.job.timeout.total_seconds(),
            )
    except TimeoutError:
        raise JobTimeoutError(job_name=prepared.definition.name, timeout=prepared.job.timeout) from None


class HandlerExit(Exception):  # noqa: N818 - it carries an exit, it is not one of our errors
    """An async handler raised a ``BaseException`` that is not an ``Exception`` (``error``)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


async def _guarded(handler: Coroutine[object, object, T]) -> T:
    """Await the handler in its own task, turning ``SystemExit``, ``KeyboardInterrupt`` and a
    ``CancelledError`` of its own into :class:`HandlerExit` (asyncio re-raises the first two out of
    the event loop, which would stop it for every job)."""
    import asyncio

    try:
        return await handler
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # cancelled from outside: its timeout, or the loop's shutdown
        raise HandlerExit(exc) from exc
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        raise HandlerExit(exc) from exc


class running:  # noqa: N801 - used as a ``with`` statement's function, like contextlib's
    """Around a handler call: its job is current, and the middleware's ``enter``/``exit`` hooks
    (the telemetry span) run around it in the calling thread or task.

    A class rather than a generator-based context manager: it runs once per message.
    """

    __slots__ = ("_run", "_token", "_wrapping")

    def __init__(self, run: Run) -> None:
        assert run.prepared is not None
        self._run = run
        self._wrapping = [handle for handle in run.handles if handle.wraps_call]
        self._token = set_current_job(run.prepared.job)
        run.has_started = True
        run.started = time.perf_counter()

    def __enter__(self) -> None:
        entered: list[RunHandle] = []
        try:
            for handle in self._wrapping:
                handle.enter(self._run)
                entered.append(handle)
        except BaseException:
            self._leave(entered)
            raise

    def __exit__(self, *exc_info: object) -> None:
        self._leave(self._wrapping)

    def _leave(self, entered: list[RunHandle]) -> None:
        try:
            for handle in reversed(entered):
                handle.exit(self._run)
        finally:
            reset_current_job(self._token)


def _arguments(prepared: Prepared) -> tuple[object, ...]:
    if prepared.definition.takes_job:
        return (prepared.payload, prepared.job)
    return (prepared.payload,)
