"""The two readers of CLOUDJOBS_* variables agree: cloudjobs' own (no .env file, what a worker and a
Lambda cold start use) and pydantic-settings' (``Settings``, and load_settings with a .env file).

Every case is read twice, from the same environment: once in a directory without ``.env`` and once
beside an empty one (which load_settings hands to pydantic-settings); the settings, or the error
and the variable it names, must be the same.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator
from pathlib import Path
from types import NoneType, UnionType

import pytest

from cloudjobs import ConfigurationError, Settings
from cloudjobs.settings import SettingsModel, environment_values, load_settings
from tests.fresh import run_fresh

Outcome = tuple[str, object]


def _read(directory: Path, *, with_dotenv_file: bool) -> Outcome:
    directory.mkdir(exist_ok=True)
    if with_dotenv_file:
        (directory / ".env").write_text("", encoding="utf-8")
    previous = Path.cwd()
    os.chdir(directory)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        return "error", (str(exc), exc.setting)
    finally:
        os.chdir(previous)
    return type(settings).__name__, settings.model_dump()


def _scalar(annotation: object) -> object:
    """The annotation without ``None`` (every setting is a scalar, optional or not)."""
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [arg for arg in typing.get_args(annotation) if arg is not NoneType]
        return inner
    return annotation


def _values_of(annotation: object) -> list[str]:
    """Strings a variable may hold for a setting of this type: accepted ones and refused ones."""
    kind = _scalar(annotation)
    if typing.get_origin(kind) is typing.Literal:
        return [*map(str, typing.get_args(kind)), "LITERAL-NOT-ALLOWED", ""]
    values: dict[object, list[str]] = {
        int: ["7", " 30 ", "1e3", "-1", "0", "99999999", "seven", ""],
        float: ["2.5", "3", "0", "-4", "inf", "nan", "soon", ""],
        bool: ["true", "0", "YES", "off", "maybe", ""],
        str: ["https://sqs.eu-west-1.amazonaws.com/123456789012/jobs", "  spaced ", ""],
        dict[str, str]: ["reports=reports-queue,bulk=https://sqs.eu-west-1.amazonaws.com/1/bulk", "=", ""],
    }
    return values[kind]


def _cases() -> Iterator[tuple[str, dict[str, str]]]:
    yield "nothing set", {}
    for field, info in SettingsModel.model_fields.items():
        for value in _values_of(info.annotation):
            yield f"{field}={value!r}", {f"CLOUDJOBS_{field.upper()}": value}
    yield "lower case", {"cloudjobs_concurrency": "3"}
    yield "mixed case", {"CloudJobs_Max_Attempts": "2"}
    yield "two spellings, the later wins", {"CLOUDJOBS_CONCURRENCY": "3", "cloudjobs_concurrency": "4"}
    yield "not a setting", {"CLOUDJOBS_NOT_A_SETTING": "1", "CLOUDJOBS_": "x", "CONCURRENCY": "2"}
    yield (
        "backoff base above the cap",
        {"CLOUDJOBS_BACKOFF_BASE_SECONDS": "9", "CLOUDJOBS_BACKOFF_CAP_SECONDS": "3"},
    )
    yield "two bad values", {"CLOUDJOBS_MAX_ATTEMPTS": "x", "CLOUDJOBS_CONCURRENCY": "y"}


CASES = list(_cases())


@pytest.mark.parametrize("variables", [variables for _, variables in CASES], ids=[name for name, _ in CASES])
def test_both_readers_give_the_same_settings_or_the_same_error(
    variables: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.lower().startswith("cloudjobs_"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    own = _read(tmp_path / "plain", with_dotenv_file=False)
    pydantic_settings = _read(tmp_path / "beside-dotenv", with_dotenv_file=True)

    # Read without pydantic-settings, then with it (a Settings); or the same error from both.
    assert (own[0], pydantic_settings[0]) in {("SettingsModel", "Settings"), ("error", "error")}
    assert own[1] == pydantic_settings[1]


def test_the_cases_cover_accepted_and_refused_values_of_every_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The comparison above proves little if every case failed, or none did.
    monkeypatch.chdir(tmp_path)
    outcomes: dict[str, set[bool]] = {}
    for _, variables in CASES:
        if len(variables) != 1:
            continue
        ((name, value),) = variables.items()
        field = name.lower().removeprefix("cloudjobs_")
        try:
            SettingsModel.model_validate(environment_values({name: value}))
            outcomes.setdefault(field, set()).add(True)
        except ValueError:
            outcomes.setdefault(field, set()).add(False)
    assert set(outcomes) == set(SettingsModel.model_fields)
    assert all(True in seen for seen in outcomes.values()), outcomes
    refused = [field for field, seen in outcomes.items() if False in seen]
    assert len(refused) >= len(outcomes) - 12  # free-text settings accept any string


def test_environment_values_keeps_only_settings_by_field_name() -> None:
    environ = {"CLOUDJOBS_QUEUE_URL": "u", "cloudjobs_Region": "r", "CLOUDJOBS_NOPE": "n", "PATH": "/bin"}

    assert environment_values(environ) == {"queue_url": "u", "region": "r"}


def test_a_worker_without_a_dotenv_file_gets_the_model_and_settings_still_subclass_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDJOBS_CONCURRENCY", "5")

    read = load_settings()
    built = Settings(_env_file=None)

    assert type(read) is SettingsModel
    assert isinstance(built, SettingsModel)
    assert read == SettingsModel.model_validate(built.model_dump())
    assert read.concurrency == built.concurrency == 5


def test_load_settings_without_dotenv_ignores_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CLOUDJOBS_CONCURRENCY=3\n", encoding="utf-8")

    assert load_settings().concurrency == 3
    assert load_settings(dotenv=False).concurrency == 8


# What pydantic-settings brings (and the asyncio cloudjobs itself loads only for async handlers and
# async calls, and the HTTP server only for a health port).
SETTINGS_ONLY_MODULES = ("pydantic_settings", "dotenv", "argparse", "asyncio", "http.server")

_WORKER_AND_LAMBDA = """
import json, os, sys
os.environ.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="eu-west-1",
                  CLOUDJOBS_QUEUE_URL="https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
                  CLOUDJOBS_CONCURRENCY="3")
import cloudjobs, cloudjobs.runtimes.aws_lambda
ran = []
jobs = cloudjobs.CloudJobs()  # on SQS: its worker is built, not run
jobs.job("noop")(ran.append)
worker = jobs.worker()
consumer = cloudjobs.CloudJobs(backend=cloudjobs.MemoryBackend("jobs"))  # its queue needs no lookup
consumer.job("noop")(ran.append)
handler = consumer.lambda_handler()
body = json.dumps({"cloudjobs": 1, "id": "j1", "type": "noop", "payload": {"n": 1}, "correlation_id": "c1",
                   "enqueued_at": "2026-01-01T00:00:00Z", "idempotency_key": None, "attempt_offset": 0,
                   "redrive_count": 0})
record = {"messageId": "m1", "receiptHandle": "r1", "body": body, "md5OfBody": "",
          "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
          "messageAttributes": {}, "eventSource": "aws:sqs", "awsRegion": "eu-west-1",
          "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:jobs"}
class Context:
    def get_remaining_time_in_millis(self): return 60_000
response = handler({"Records": [record]}, Context())
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in MODULES))
print(json.dumps([response, ran, jobs.settings.concurrency, jobs.settings.max_attempts, loaded]))
""".replace("MODULES", repr(SETTINGS_ONLY_MODULES))


def test_a_worker_and_a_lambda_batch_without_a_dotenv_file_load_no_settings_library(tmp_path: Path) -> None:
    stdout = run_fresh(_WORKER_AND_LAMBDA, cwd=tmp_path)

    assert json.loads(stdout) == [{"batchItemFailures": []}, [{"n": 1}], 3, 5, []]


def test_with_a_dotenv_file_pydantic_settings_reads_it(tmp_path: Path) -> None:
    # The check above must be able to fail: the same script beside a .env file loads the library.
    (tmp_path / ".env").write_text("CLOUDJOBS_MAX_ATTEMPTS=2\n", encoding="utf-8")

    response, ran, concurrency, max_attempts, loaded = json.loads(run_fresh(_WORKER_AND_LAMBDA, cwd=tmp_path))

    assert (response, ran, concurrency, max_attempts) == ({"batchItemFailures": []}, [{"n": 1}], 3, 2)
    assert {"pydantic_settings", "dotenv", "asyncio"} <= set(loaded)
