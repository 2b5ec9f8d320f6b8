"""LocalAwsServer: moto in a subprocess, started and stopped cleanly."""

from __future__ import annotations

import http.client
import importlib.util
import subprocess
import sys

import pytest

from cloudjobs.local import LocalAwsServer, local_environment


def _answers(endpoint_url: str) -> bool:
    host, port = endpoint_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        connection.request("GET", "/moto-api/")
        connection.getresponse().read()
    except OSError:
        return False
    finally:
        connection.close()
    return True


def test_server_answers_while_running_and_stops_on_exit() -> None:
    with LocalAwsServer() as server:
        endpoint_url = server.endpoint_url
        assert _answers(endpoint_url)

    assert not _answers(endpoint_url)
    with pytest.raises(RuntimeError):
        _ = server.endpoint_url


def test_missing_moto_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)

    with pytest.raises(ImportError, match=r"cloudjobs\[local\]"):
        LocalAwsServer().start()


def test_importing_local_does_not_load_moto() -> None:
    code = "import sys, cloudjobs.local; print(any(name.startswith('moto') for name in sys.modules))"

    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert output.strip() == "False"


def test_local_environment_points_boto3_at_the_endpoint() -> None:
    environment = local_environment("http://127.0.0.1:5000")

    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert environment["AWS_REGION"] == environment["AWS_DEFAULT_REGION"] == "us-east-1"
    assert environment["AWS_ACCESS_KEY_ID"] == environment["AWS_SECRET_ACCESS_KEY"] == "testing"
