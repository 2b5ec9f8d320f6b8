"""The switch of the no-SDK fast path: is an SDK behind the global tracer and meter providers?"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
from opentelemetry import trace

from cloudjobs.telemetry import providers
from cloudjobs.telemetry.providers import _ProviderWatch
from tests.fresh import run_fresh
from tests.otel import Capture


class _Loader:
    """Stands in for the API's public getter: counts its calls, may install a provider."""

    def __init__(self, module: SimpleNamespace, installs: object = None) -> None:
        self.module = module
        self.installs = installs
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.installs is not None:
            self.module.PROVIDER = self.installs
        return self.installs


def _watch(module: SimpleNamespace, loader: _Loader) -> _ProviderWatch:
    return _ProviderWatch(module, "PROVIDER", loader, (trace.NoOpTracerProvider,))


def test_no_provider_means_no_sdk_until_one_is_installed() -> None:
    module = SimpleNamespace(PROVIDER=None)
    loader = _Loader(module)
    watch = _watch(module, loader)

    assert not watch.is_active()
    assert not watch.is_active()
    module.PROVIDER = object()
    assert watch.is_active()


def test_the_apis_no_op_provider_is_not_an_sdk() -> None:
    module = SimpleNamespace(PROVIDER=trace.NoOpTracerProvider())

    assert not _watch(module, _Loader(module)).is_active()


def test_the_public_getter_is_asked_once_so_it_can_load_a_provider_the_environment_names() -> None:
    module = SimpleNamespace(PROVIDER=None)
    empty = _Loader(module)
    watch = _watch(module, empty)
    watch.is_active()
    watch.is_active()
    named = _Loader(module, installs=object())

    assert empty.calls == 1
    assert _watch(module, named).is_active()
    assert named.calls == 1


def test_without_the_apis_global_every_job_takes_the_full_path() -> None:
    module = SimpleNamespace()

    assert _watch(module, _Loader(module)).is_active()
    assert _ProviderWatch(None, "PROVIDER", lambda: None, ()).is_active()


@pytest.mark.parametrize("checked_first", [False, True], ids=["api-imported-first", "checked-first"])
def test_the_watches_see_the_providers_installed_through_the_api(checked_first: bool) -> None:
    # A fresh interpreter: this process has the SDK installed by other tests. An SDK is installed
    # through the API's modules, so checks made before the process imports them answer without
    # loading them, and still see the providers installed after.
    early = (
        "from cloudjobs.telemetry.providers import is_metering, is_tracing\n"
        "early = [is_tracing(), is_metering(), any(m.startswith('opentelemetry') for m in sys.modules)]\n"
        if checked_first
        else "early = None\n"
    )
    script = (
        "import json, sys\n" + early + "from opentelemetry import metrics, trace\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from cloudjobs.telemetry.providers import is_metering, is_tracing\n"
        "states = [[is_tracing(), is_metering()]]\n"
        "metrics.set_meter_provider(MeterProvider())\n"
        "states.append([is_tracing(), is_metering()])\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "states.append([is_tracing(), is_metering()])\n"
        "print(json.dumps([early, states]))\n"
    )
    stdout = run_fresh(script)

    early_states = [False, False, False] if checked_first else None
    assert json.loads(stdout) == [early_states, [[False, False], [False, True], [True, True]]]


def test_the_sdk_installed_for_tests_is_seen(otel: Capture) -> None:
    assert providers.is_tracing()
    assert providers.is_metering()


def test_a_provider_the_environment_names_is_loaded_by_the_first_check() -> None:
    script = (
        "from cloudjobs.telemetry.providers import is_metering, is_tracing\n"
        "print(is_tracing(), is_metering())\n"
    )
    environment = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}
    stdout = run_fresh(script, env=environment)

    assert stdout.split() == ["True", "False"]
