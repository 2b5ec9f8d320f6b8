"""Whether an SDK stands behind the global tracer and meter providers: the no-SDK fast path's switch.

Without an SDK the API hands out no-op spans and instruments. Rather than build span names,
attribute dicts and metric calls only for no-ops to drop them, cloudjobs asks :func:`is_tracing`
and :func:`is_metering` once per enqueue and per received batch and skips that work. Trace context and
baggage are still passed on through the configured propagators either way (see ``spans``).

The two checks run per enqueue and per batch, so they must cost next to nothing, and they must notice
a provider installed at any time (an application may configure its SDK after its first job):

- the API keeps the installed provider in a module global, None until one is set; reading it is a
  dictionary lookup, where ``get_tracer_provider()`` also consults the environment on every call;
- the answer is cached against the identity of that object and recomputed only when it changes.

The first check also lets the API load a provider named by ``OTEL_PYTHON_TRACER_PROVIDER`` or
``OTEL_PYTHON_METER_PROVIDER``, as its own getters do. Should a later API release move those
globals, both checks answer True: every job then takes the full path, slower but still correct.

OpenTelemetry itself is imported only once it can matter: a provider is installed through the API's
modules (``opentelemetry.trace``, ``opentelemetry.metrics``), so while the process has not imported
them and the environment names no provider, no SDK can be behind them and the checks answer False
without loading the API (a Lambda cold start without telemetry skips its import).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Final

_MISSING: Final = object()
"""What reading a global the API no longer has gives."""
_NEVER: Final = object()
"""The provider seen before the first check."""


class _ProviderWatch:
    """Whether one global provider is an SDK's, cached by the identity of the provider object.

    Args:
        module: the API module holding the global (None when it is not where expected).
        attribute: the global's name in ``module``.
        load: the API's public getter, called once so that it can load a provider the environment
            names.
        inactive: the API's own provider classes, which record nothing.
    """

    __slots__ = ("_attribute", "_inactive", "_is_active", "_load", "_module", "_seen")

    def __init__(
        self,
        module: object,
        attribute: str,
        load: Callable[[], object],
        inactive: tuple[type, ...],
    ) -> None:
        self._module = module
        self._attribute = attribute
        self._load = load
        self._inactive = inactive
        self._seen: object = _NEVER
        self._is_active = False

    def is_active(self) -> bool:
        """True when the global provider is neither unset nor one of the API's no-op providers."""
        provider = getattr(self._module, self._attribute, _MISSING)
        if provider is self._seen:
            return self._is_active
        return self._refresh(provider)

    def _refresh(self, provider: object) -> bool:
        if provider is _MISSING:
            # The API moved its global: take the full path rather than miss an SDK.
            return True
        if provider is None and self._seen is _NEVER:
            self._load()
            provider = getattr(self._module, self._attribute, None)
        # Races between threads only recompute the same answer.
        self._is_active = provider is not None and not isinstance(provider, self._inactive)
        self._seen = provider
        return self._is_active


class _DeferredWatch:
    """A :class:`_ProviderWatch` made on first need: none while the API module that holds the
    provider is not imported and the environment names no provider (nothing can be installed then).

    Args:
        module: the API module that holds the global provider.
        variable: the environment variable that names a provider for the API to load (read once).
        make: builds the watch (importing the API).
    """

    __slots__ = ("_is_named", "_make", "_module", "_variable", "_watch")

    def __init__(self, module: str, variable: str, make: Callable[[], _ProviderWatch]) -> None:
        self._module = module
        self._variable = variable
        self._make = make
        self._is_named: bool | None = None
        self._watch: _ProviderWatch | None = None

    def is_active(self) -> bool:
        """True when the global provider is an SDK's (see :meth:`_ProviderWatch.is_active`)."""
        watch = self._watch
        if watch is None:
            is_named = self._is_named
            if is_named is None:
                is_named = self._names_provider()
            if not is_named and self._module not in sys.modules:
                return False
            # Races between threads build equal watches: the last one stays.
            watch = self._watch = self._make()
        return watch.is_active()

    def _names_provider(self) -> bool:
        if self._is_named is None:
            self._is_named = bool(os.environ.get(self._variable))
        return self._is_named


def loaded(module: str) -> ModuleType | None:
    """An OpenTelemetry API module (``"opentelemetry.trace"``...) if this process has imported it,
    else None, without importing it: while it is not loaded, nothing it holds (a span, baggage, a
    provider) can be in force.

    The module comes from an import, not from ``sys.modules``: another thread may still be
    initialising it, and the import waits for that.
    """
    if module not in sys.modules:
        return None
    __import__(module)
    return sys.modules[module]


def _tracing_watch() -> _ProviderWatch:
    from opentelemetry import trace

    return _ProviderWatch(
        trace,
        "_TRACER_PROVIDER",
        trace.get_tracer_provider,
        (trace.ProxyTracerProvider, trace.NoOpTracerProvider),
    )


def _metering_watch() -> _ProviderWatch:
    from opentelemetry import metrics

    return _ProviderWatch(
        getattr(metrics, "_internal", None),
        "_METER_PROVIDER",
        metrics.get_meter_provider,
        (metrics.NoOpMeterProvider,),
    )


_TRACING: Final = _DeferredWatch("opentelemetry.trace", "OTEL_PYTHON_TRACER_PROVIDER", _tracing_watch)
_METERING: Final = _DeferredWatch(
    "opentelemetry.metrics._internal", "OTEL_PYTHON_METER_PROVIDER", _metering_watch
)


# Bound methods rather than wrapper functions: one call fewer on a path taken per job.
is_tracing: Final[Callable[[], bool]] = _TRACING.is_active
"""True when a recording tracer provider (an SDK's) is installed as the global one."""
is_metering: Final[Callable[[], bool]] = _METERING.is_active
"""True when a recording meter provider (an SDK's) is installed as the global one."""
