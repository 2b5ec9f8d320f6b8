"""Clients honour AWS_REGION, which botocore alone does not read."""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest

from cloudjobs.aws_clients import create_client, new_session, resolve_region


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")


@pytest.mark.usefixtures("no_region")
def test_aws_region_is_used_when_botocore_finds_no_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    client = create_client("sqs")
    try:
        assert client.meta.region_name == "eu-west-3"
    finally:
        client.close()


@pytest.mark.usefixtures("no_region")
def test_an_explicit_region_and_then_boto3s_own_come_before_aws_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert resolve_region(boto3.session.Session(), "ap-south-1") == "ap-south-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert resolve_region(boto3.session.Session()) == "us-west-2"


@pytest.mark.usefixtures("no_region")
def test_no_region_anywhere_resolves_to_none() -> None:
    assert resolve_region(boto3.session.Session()) is None


def _count_endpoint_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every JSON file botocore reads (its endpoint table is named ``endpoints``)."""
    import botocore.loaders

    loads: list[str] = []
    read = botocore.loaders.JSONFileLoader.load_file

    def load_file(self: botocore.loaders.JSONFileLoader, file_path: str) -> object:
        loads.append(file_path)
        return read(self, file_path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", load_file)
    return loads


def _endpoint_tables(loads: list[str]) -> int:
    return sum(1 for path in loads if path.endswith("/endpoints"))


@pytest.mark.usefixtures("no_region")
def test_clients_read_botocores_data_once_between_them(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = _count_endpoint_loads(monkeypatch)
    plain = [boto3.session.Session().client("sqs", region_name="eu-west-1") for _ in range(2)]
    assert _endpoint_tables(loads) == 2, "the control: two plain sessions read the table twice"
    loads.clear()
    ours = [create_client(service, region="eu-west-1") for service in ("sqs", "dynamodb", "sqs")]
    assert _endpoint_tables(loads) <= 1
    assert [client.meta.region_name for client in ours] == ["eu-west-1"] * 3
    for client in plain + ours:
        client.close()


def test_sessions_share_data_but_resolve_credentials_each_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    first = new_session()
    first_credentials = first.get_credentials()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second-key")
    second_credentials = new_session().get_credentials()
    assert first_credentials is not None
    assert second_credentials is not None
    assert (first_credentials.access_key, second_credentials.access_key) == ("first-key", "second-key")
    # boto3 adds its data directory with every session: the shared search path does not grow.
    paths = [new_session()._session.get_component("data_loader").search_paths for _ in range(3)]
    assert paths[0] is paths[2]
    assert len(paths[2]) == len(set(paths[2]))


_APPLICATION_AND_CLOUDJOBS_CLIENTS = """
import sys

import boto3
import botocore.loaders

loads = []
read = botocore.loaders.JSONFileLoader.load_file


def load_file(self, file_path):
    loads.append(file_path)
    return read(self, file_path)


botocore.loaders.JSONFileLoader.load_file = load_file
from cloudjobs.aws_clients import create_client

if sys.argv[1] == "application-first":
    clients = [boto3.client("s3", region_name="eu-west-1"), create_client("sqs", region="eu-west-1")]
else:
    clients = [create_client("sqs", region="eu-west-1")]
    print(boto3.DEFAULT_SESSION is None)
print(sum(path.endswith("/endpoints") for path in loads), sum(path.endswith("/partitions") for path in loads))
"""


def _run_clients_script(order: str) -> list[str]:
    # A fresh interpreter: this one has read the data already.
    finished = subprocess.run(
        [sys.executable, "-c", _APPLICATION_AND_CLOUDJOBS_CLIENTS, order],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.split()


def test_cloudjobs_clients_read_botocores_data_through_the_applications_default_session() -> None:
    # The endpoint table and the partitions, once each: the application's S3 client read them.
    assert _run_clients_script("application-first") == ["1", "1"]


def test_cloudjobs_sets_up_no_default_session_of_its_own() -> None:
    assert _run_clients_script("cloudjobs-first") == ["True", "1", "1"]
