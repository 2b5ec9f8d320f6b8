"""Settings: CLOUDJOBS_* variables, and errors that name the variable to change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cloudjobs import ConfigurationError, Settings
from cloudjobs.settings import load_settings


@pytest.fixture(autouse=True)
def _no_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings also read ./.env: run from an empty directory so only the test's variables count.
    monkeypatch.chdir(tmp_path)


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings()

    assert settings.queue_url is None
    assert settings.max_attempts == 5
    assert settings.wait_time_seconds == 20
    assert settings.job_timeout == timedelta(seconds=300)


def test_cloudjobs_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDJOBS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs")
    monkeypatch.setenv("CLOUDJOBS_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("CLOUDJOBS_JOB_TIMEOUT_SECONDS", "12.5")
    monkeypatch.setenv("CLOUDJOBS_SHUTDOWN_TIMEOUT_SECONDS", "4")
    monkeypatch.setenv("CLOUDJOBS_DEFAULT_JOB_TYPE", "import-order")

    settings = load_settings()

    assert settings.queue_url == "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    assert settings.max_attempts == 7
    assert settings.job_timeout == timedelta(seconds=12.5)
    assert settings.shutdown_timeout == timedelta(seconds=4)
    assert settings.default_job_type == "import-order"


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_ATTEMPTS", "9")

    assert load_settings().max_attempts == 5


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CLOUDJOBS_CONCURRENCY=3\n", encoding="utf-8")

    assert load_settings().concurrency == 3


def test_a_dotenv_file_that_appears_later_is_read_by_the_next_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a file the .env source is left out; whether it is there is decided on every read.
    assert load_settings().concurrency == 8
    (tmp_path / ".env").write_text("CLOUDJOBS_CONCURRENCY=3\nCLOUDJOBS_MAX_ATTEMPTS=2\n", encoding="utf-8")
    monkeypatch.setenv("CLOUDJOBS_MAX_ATTEMPTS", "4")

    settings = load_settings()

    assert settings.concurrency == 3
    assert settings.max_attempts == 4  # the environment still wins over the file


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLOUDJOBS_MAX_ATTEMPTS", "many"),
        ("CLOUDJOBS_MAX_ATTEMPTS", "0"),
        ("CLOUDJOBS_WAIT_TIME_SECONDS", "21"),
        ("CLOUDJOBS_VISIBILITY_TIMEOUT_SECONDS", "43201"),
        ("CLOUDJOBS_CONCURRENCY", "-1"),
        ("CLOUDJOBS_JOB_TIMEOUT_SECONDS", "0"),
    ],
)
def test_a_malformed_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError) as caught:
        load_settings()

    assert caught.value.setting == variable
    assert variable in str(caught.value)


def test_a_backoff_base_above_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDJOBS_BACKOFF_BASE_SECONDS", "60")
    monkeypatch.setenv("CLOUDJOBS_BACKOFF_CAP_SECONDS", "30")

    with pytest.raises(ConfigurationError, match="CLOUDJOBS_BACKOFF_BASE_SECONDS"):
        load_settings()


def test_a_backoff_base_equal_to_the_cap_is_accepted() -> None:
    settings = Settings(_env_file=None, backoff_base_seconds=30, backoff_cap_seconds=30)

    assert settings.backoff_base_seconds == settings.backoff_cap_seconds


def test_the_heartbeat_defaults_to_a_third_of_the_visibility() -> None:
    settings = Settings(_env_file=None)

    assert settings.heartbeat_interval(timedelta(seconds=90)) == timedelta(seconds=30)


def test_a_heartbeat_of_at_most_half_the_visibility_is_accepted() -> None:
    settings = Settings(_env_file=None, heartbeat_interval_seconds=15)

    assert settings.heartbeat_interval(timedelta(seconds=30)) == timedelta(seconds=15)


@pytest.mark.parametrize("interval", [16, 30, 45])
def test_a_heartbeat_not_well_inside_the_visibility_names_its_variable(interval: int) -> None:
    settings = Settings(_env_file=None, heartbeat_interval_seconds=interval)

    with pytest.raises(ConfigurationError) as caught:
        settings.heartbeat_interval(timedelta(seconds=30))

    assert caught.value.setting == "CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS"
    assert "CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS" in str(caught.value)


def test_the_heartbeat_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS", "20")

    with pytest.raises(ConfigurationError, match="CLOUDJOBS_HEARTBEAT_INTERVAL_SECONDS"):
        load_settings().heartbeat_interval(timedelta(seconds=30))


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)

    with pytest.raises(ValueError, match="frozen"):
        settings.max_attempts = 2  # type: ignore[misc]
