"""infra/: the (untested) LocalStack compose file parses and uses cloudjobs' names.

No container engine is available here, so the file is never run; these tests keep it from drifting
away from the settings and from the table the library expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudjobs.provisioning import TABLE_JOB_ID_INDEX, TABLE_PARTITION_KEY, TABLE_TTL_ATTRIBUTE, QueueSpec
from cloudjobs.settings import ENV_PREFIX, Settings

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "localstack-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    with COMPOSE.open(encoding="utf-8") as file:
        compose = yaml.safe_load(file)
    assert isinstance(compose, dict)
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _script(service: dict[str, Any]) -> str:
    assert service["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = service["command"]
    assert isinstance(script, str)
    return script


def test_compose_file_says_it_is_untested() -> None:
    assert "UNTESTED" in COMPOSE.read_text(encoding="utf-8").splitlines()[0]


def test_every_cloudjobs_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    variables = {
        name
        for service in services.values()
        for name in service.get("environment", {})
        if name.startswith(ENV_PREFIX)
    }
    assert variables
    for variable in variables:
        assert variable.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, variable


def test_services_agree_on_the_queue_and_table(services: dict[str, dict[str, Any]]) -> None:
    names = {
        (variable, service["environment"][variable])
        for service in services.values()
        for variable in ("CLOUDJOBS_QUEUE_NAME", "CLOUDJOBS_IDEMPOTENCY_TABLE")
        if variable in service.get("environment", {})
    }
    assert {variable for variable, _ in names} == {"CLOUDJOBS_QUEUE_NAME", "CLOUDJOBS_IDEMPOTENCY_TABLE"}
    assert len(names) == 2, names


def test_queue_is_provisioned_by_cloudjobs_under_the_settings_name(
    services: dict[str, dict[str, Any]],
) -> None:
    provision = services["provision"]
    assert 'cloudjobs provision "$$CLOUDJOBS_QUEUE_NAME"' in _script(provision)
    QueueSpec(provision["environment"]["CLOUDJOBS_QUEUE_NAME"])  # a name the library accepts


def test_table_is_named_like_the_terraform_modules_default(services: dict[str, dict[str, Any]]) -> None:
    environment = services["table"]["environment"]
    assert environment["CLOUDJOBS_IDEMPOTENCY_TABLE"] == f"{environment['CLOUDJOBS_QUEUE_NAME']}-idempotency"


def test_table_has_the_shape_the_library_expects(services: dict[str, dict[str, Any]]) -> None:
    script = _script(services["table"])
    assert '--table-name "$$CLOUDJOBS_IDEMPOTENCY_TABLE"' in script
    assert "--billing-mode PAY_PER_REQUEST" in script
    assert f"--key-schema AttributeName={TABLE_PARTITION_KEY},KeyType=HASH" in script
    assert f"AttributeName={TABLE_PARTITION_KEY},AttributeType=S" in script
    assert "AttributeName=job_id,AttributeType=S" in script
    assert (
        f"IndexName={TABLE_JOB_ID_INDEX},KeySchema=[{{AttributeName=job_id,KeyType=HASH}}],"
        "Projection={ProjectionType=ALL}"
    ) in script
    assert f"--time-to-live-specification Enabled=true,AttributeName={TABLE_TTL_ATTRIBUTE}" in script


def test_localstack_listens_on_the_loopback_address_only(services: dict[str, dict[str, Any]]) -> None:
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
