"""The switch of the no-SDK fast path: is an SDK behind the global tracer and meter providers?"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

from opentelemetry import trace

from cloudjobs.telemetry import providers
from cloudjobs.telemetry.providers import _ProviderWatch
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


def test_the_watches_read_where_the_installed_api_keeps_its_providers() -> None:
    # A fresh interpreter: this process has the SDK installed by other tests.
    script = """
import json
import os
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from cloudjobs.telemetry.providers import is_metering, is_tracing
states = [[is_tracing(), is_metering()]]
metrics.set_meter_provider(MeterProvider())
states.append([is_tracing(), is_metering()])
trace.set_tracer_provider(TracerProvider())
states.append([is_tracing(), is_metering()])
print(json.dumps(states))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert json.loads(completed.stdout) == [[False, False], [False, True], [True, True]]


def test_the_sdk_installed_for_tests_is_seen(otel: Capture) -> None:
    assert providers.is_tracing()
    assert providers.is_metering()


def test_the_checks_load_no_opentelemetry_until_the_process_imports_it() -> None:
    # An SDK is installed through the API's modules: until they are imported none can be, so the
    # checks answer without loading them, and see the providers installed after.
    script = """
import json, sys
from cloudjobs.telemetry.providers import is_metering, is_tracing
states = [[is_tracing(), is_metering(), any(m.startswith("opentelemetry") for m in sys.modules)]]
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
states.append([is_tracing(), is_metering()])
metrics.set_meter_provider(MeterProvider())
states.append([is_tracing(), is_metering()])
trace.set_tracer_provider(TracerProvider())
states.append([is_tracing(), is_metering()])
print(json.dumps(states))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert json.loads(completed.stdout) == [
        [False, False, False],
        [False, False],
        [False, True],
        [True, True],
    ]


def test_a_provider_the_environment_names_is_loaded_by_the_first_check() -> None:
    script = (
        "from cloudjobs.telemetry.providers import is_metering, is_tracing\n"
        "print(is_tracing(), is_metering())\n"
    )
    environment = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=environment,
    )

    assert completed.stdout.split() == ["True", "False"]
