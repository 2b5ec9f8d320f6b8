"""Telemetry, the switch the producer and the consumer core hold: on or off, and whether a run's
trace would do anything at all.

The spans themselves (:mod:`cloudjobs.telemetry.spans`) load OpenTelemetry; they are imported when
the first enqueue or traced run starts, so a consumer that never traces (no SDK installed, no trace
context in its messages) never loads the API.
"""

from __future__ import annotations

import enum
import functools
from typing import TYPE_CHECKING, Final

from cloudjobs.telemetry import providers
from cloudjobs.telemetry.attributes import carries_context

if TYPE_CHECKING:
    from cloudjobs.backends.base import Delivery, QueueInfo
    from cloudjobs.run import Run
    from cloudjobs.telemetry.spans import EnqueueTrace, RunTrace


class Telemetry:
    """Traces and measures enqueues and job runs; the producer and the consumer core call it.

    Args:
        is_enabled: False turns every span, metric and injection off (the message then carries no
            trace context, and correlation ids are not mirrored in baggage). For benchmarks and for
            deployments that want none of it.
    """

    def __init__(self, *, is_enabled: bool = True) -> None:
        self.is_enabled = is_enabled

    def start_enqueue(self, info: QueueInfo, count: int) -> EnqueueTrace:
        """Begin tracing one producer call of ``count`` messages to ``info``'s queue."""
        from cloudjobs.telemetry.spans import EnqueueTrace

        return EnqueueTrace(info, count, is_enabled=self.is_enabled)

    def resume_enqueue(self, info: QueueInfo, count: int) -> EnqueueTrace:
        """Meter the send of ``count`` messages stamped by an earlier call (the outbox relay's);
        no span is started: each message carries the trace context of its first call."""
        from cloudjobs.telemetry.spans import EnqueueTrace

        return EnqueueTrace(info, count, is_enabled=self.is_enabled, is_traced=False)

    def start(self, run: Run) -> RunTrace:
        """The run's CONSUMER span and metrics, as a middleware handle (the pipeline's outermost)."""
        from cloudjobs.telemetry.spans import RunTrace

        return RunTrace(run.delivery, run.queue, is_enabled=self.is_enabled)


class TraceNeed(enum.Enum):
    """What a run's trace would do, as far as the telemetry switch and the installed providers say
    (the message's own trace context decides the rest: see :func:`is_idle`)."""

    NONE = "none"
    """Telemetry is off: no span, no metric, no context to pass on."""
    CONTEXT = "context"
    """No SDK's provider is installed: a run is traced only to pass on the trace context or baggage
    its message carries (to the jobs its handler enqueues)."""
    ALWAYS = "always"
    """An SDK records spans or metrics: every run is traced."""


# Module globals: reading a member through its class costs ~8 times as much, once per run.
_NONE: Final = TraceNeed.NONE
_CONTEXT: Final = TraceNeed.CONTEXT
_ALWAYS: Final = TraceNeed.ALWAYS


def trace_need(telemetry: Telemetry) -> TraceNeed:
    """What runs need of their trace now. Consumers ask once per received batch (the provider
    checks are the costly part of :func:`is_idle`); a provider installed meanwhile counts from the
    next batch on."""
    if not telemetry.is_enabled:
        return _NONE
    if providers.is_tracing() or providers.is_metering():
        return _ALWAYS
    return _CONTEXT


def is_idle(telemetry: Telemetry, delivery: Delivery, need: TraceNeed | None = None) -> bool:
    """True when the trace of a run of ``delivery`` would do nothing, so the consumer starts none:
    telemetry is off, or neither provider is an SDK's and the message carries no trace context or
    baggage to pass on (see :class:`RunTrace`: no span, no metric, no context to make current).

    Args:
        telemetry: the switch.
        delivery: the message.
        need: :func:`trace_need`'s answer, when the caller asked it for the message's batch.
    """
    if need is None:
        need = trace_need(telemetry)
    if need is _CONTEXT:
        return not carries_context(delivery.attributes, delivery.system_attributes)
    return need is _NONE


@functools.cache
def default_telemetry() -> Telemetry:
    """The telemetry used when a producer or consumer is given none: on, through the global providers."""
    return Telemetry()
