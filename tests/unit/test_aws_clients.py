"""Clients honour AWS_REGION, which botocore alone does not read."""

from __future__ import annotations

import boto3
import pytest

from cloudjobs.aws_clients import create_client, resolve_region


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
