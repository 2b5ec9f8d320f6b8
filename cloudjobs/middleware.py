"""Middleware: hooks around every run of the pipeline (telemetry, idempotency, cancellation, yours).

A :class:`Middleware` is asked once per delivery, as it arrives, for a :class:`RunHandle`: the hooks
and state it keeps for that one run. The pipeline calls the handles in middleware order on the way
in and in reverse order on the way out::

    prefetch(deliveries)        once per received batch, before its runs (BatchMiddleware, optional)
    start(run)                  as the delivery arrives, before it is decoded (→ a handle or None)
    handle.before_run(run)      once prepared: return an outcome to skip the handler
    handle.enter / exit(run)    around the handler call, in its thread or task (``wraps_call``)
    handle.renew(run)           on the runtime's heartbeat while the handler runs
    handle.record_progress      the job's ``job.progress(n)``
    handle.settle(run, outcome) every run ends here, whatever decided it: see and replace the outcome
    handle.settle_late(run)     a sync handler settled by its deadline has returned at last

Every handle that was started is settled exactly once, also when the delivery never decoded or a
later middleware decided the outcome (``run.has_started`` tells whether the handler ran).

:class:`ConsumerMiddleware` is the earlier two-method protocol (``before_run`` / ``after_run`` on a
:class:`~cloudjobs.run.Prepared`). ``jobs.add_middleware`` still takes it, through
:class:`ConsumerMiddlewareAdapter`; it is deprecated in favour of :class:`Middleware`, which sees
every run (not only those that decoded) and keeps per-run state on its handle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cloudjobs.backends.base import Delivery
from cloudjobs.outcomes import Outcome
from cloudjobs.run import Prepared, Run


class RunHandle:
    """One middleware's hooks for one run. Every hook is optional: the defaults do nothing.

    A handle that keeps no per-run state may be shared by every run (return the same object from
    :meth:`Middleware.start`): each hook gets the run.
    """

    __slots__ = ()

    wraps_call: bool = False
    """True when :meth:`enter` and :meth:`exit` must run around the handler call."""

    def before_run(self, run: Run) -> Outcome | None:
        """The delivery is prepared (``run.prepared``): return an outcome to skip the handler."""
        return None

    def enter(self, run: Run) -> None:
        """The handler is about to be called, in the thread (or task) that calls it."""

    def exit(self, run: Run) -> None:
        """The handler call returned or raised (same thread or task as :meth:`enter`)."""

    def renew(self, run: Run) -> None:
        """The runtime's heartbeat, while the handler runs: extend what the run holds."""

    def record_progress(self, run: Run, percent: int) -> None:
        """The handler reported its progress (``job.progress(percent)``)."""

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        """The run's outcome so far; return it, or another one. Called once for every started handle.

        ``run.is_still_running``: a sync handler passed its timeout and its thread runs on; what
        the run holds must be kept until :meth:`settle_late`.
        """
        return outcome

    def settle_late(self, run: Run, *, result: object, error: BaseException | None) -> None:
        """A sync handler settled by its deadline returned ``result`` or raised ``error`` at last."""


@runtime_checkable
class Middleware(Protocol):
    """Hooks around every run; see the module docstring for the order of calls."""

    def start(self, run: Run) -> RunHandle | None:
        """The delivery ``run.delivery`` arrived: return the hooks for its run, or None to stay out."""
        ...


@runtime_checkable
class BatchMiddleware(Middleware, Protocol):
    """A middleware that also looks at each received batch before its runs start (optional)."""

    def prefetch(self, deliveries: Sequence[Delivery]) -> None:
        """Read what the batch's runs will need, in one request rather than one per run.

        An exception is logged and ignored: each run then reads for itself.
        """
        ...


class ConsumerMiddleware(Protocol):
    """A hook around the handler call: the earlier protocol, kept working.

    .. deprecated:: 0.2
       Implement :class:`Middleware` instead: it sees every run and keeps per-run state on a handle.
    """

    def before_run(self, prepared: Prepared) -> Outcome | None:
        """Return an outcome to skip the handler (e.g. a stored result), or None to run it."""
        ...

    def after_run(self, prepared: Prepared, outcome: Outcome) -> Outcome:
        """See, and possibly replace, the outcome of a handler run."""
        ...


class ConsumerMiddlewareAdapter(RunHandle):
    """Runs a :class:`ConsumerMiddleware` as a :class:`Middleware`, with its old semantics.

    ``before_run`` sees prepared deliveries only; ``after_run`` is called only for runs whose
    handler was called (not for outcomes a middleware decided, nor for undecodable messages).
    """

    __slots__ = ("_middleware",)

    def __init__(self, middleware: ConsumerMiddleware) -> None:
        self._middleware = middleware

    def start(self, run: Run) -> RunHandle:
        """The same stateless handle for every run."""
        return self

    def before_run(self, run: Run) -> Outcome | None:
        """The wrapped middleware's ``before_run``."""
        assert run.prepared is not None
        return self._middleware.before_run(run.prepared)

    def settle(self, run: Run, outcome: Outcome) -> Outcome:
        """The wrapped middleware's ``after_run``, for runs whose handler was called."""
        if not run.has_started or run.prepared is None:
            return outcome
        return self._middleware.after_run(run.prepared, outcome)


def as_middleware(middleware: Middleware | ConsumerMiddleware) -> Middleware:
    """``middleware`` itself, or a :class:`ConsumerMiddleware` adapted to the :class:`Middleware` protocol."""
    if isinstance(middleware, Middleware):
        return middleware
    return ConsumerMiddlewareAdapter(middleware)
