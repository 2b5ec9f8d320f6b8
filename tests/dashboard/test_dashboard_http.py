"""The dashboard over HTTP on the memory backend: authentication, CSRF, read-only mode, escaping of
attacker-controlled values, the purge confirmation, and the command's refusal to listen on a
non-loopback address without a token."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import httpx
import pytest
from pydantic import BaseModel

from cloudjobs import CloudJobs, Settings
from cloudjobs.backends.memory import MemoryBackend
from cloudjobs.cli.exit_codes import EXIT_USAGE
from cloudjobs.cli.main import main as cli_main
from cloudjobs.dashboard import NoAuth, TokenAuth, create_app
from cloudjobs.dashboard.serving import serving
from cloudjobs.errors import ConfigurationError, PermanentError
from cloudjobs.idempotency.memory import MemoryIdempotencyStore

TOKEN = "s3cret-token-of-the-operators"
SCRIPT = "<script>alert('owned')</script>"


class Note(BaseModel):
    text: str


def _jobs() -> tuple[CloudJobs, MemoryBackend]:
    backend = MemoryBackend(max_receive_count=2)
    jobs = CloudJobs(
        settings=Settings(_env_file=None, max_attempts=1),
        backend=backend,
        idempotency_store=MemoryIdempotencyStore(clock=backend),
    )

    @jobs.job("note", track_status=True)
    def note(payload: Note) -> str:
        if payload.text.startswith("<"):
            raise PermanentError(f"cannot take {payload.text}")
        return payload.text

    return jobs, backend


@pytest.fixture
def client() -> Iterator[tuple[httpx.Client, CloudJobs]]:
    jobs, _ = _jobs()
    with serving(create_app(jobs, auth=TokenAuth(TOKEN))) as url, httpx.Client(base_url=url) as test_client:
        yield test_client, jobs


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def test_requests_without_the_token_are_refused_and_basic_auth_is_accepted(
    client: tuple[httpx.Client, CloudJobs],
) -> None:
    test_client, _ = client
    refused = test_client.get("/")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert test_client.get("/", headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 401
    basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
    assert test_client.get("/", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    page = test_client.get("/", headers=_bearer())
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_message_values_are_escaped_never_run(client: tuple[httpx.Client, CloudJobs]) -> None:
    test_client, jobs = client
    job_id = jobs.enqueue("note", Note(text=SCRIPT))
    jobs.drain()
    page = test_client.get("/dead-letters", headers=_bearer()).text
    assert SCRIPT not in page
    assert "&lt;script&gt;" in page
    job_page = test_client.get("/jobs", params={"id": job_id}, headers=_bearer()).text
    assert SCRIPT not in job_page
    assert "failed" in job_page


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    client: tuple[httpx.Client, CloudJobs],
) -> None:
    test_client, jobs = client
    job_id = jobs.enqueue("note", Note(text="<bad>"))
    jobs.drain()
    test_client.get("/dead-letters", headers=_bearer())  # sets the cookie
    refused = test_client.post(
        "/dead-letters/purge", data={"id": job_id, "confirm": "yes"}, headers=_bearer()
    )
    assert refused.status_code == 403
    forged = test_client.post(
        "/dead-letters/purge", data={"id": job_id, "confirm": "yes", "csrf": "x" * 43}, headers=_bearer()
    )
    assert forged.status_code == 403
    assert [job.job_id for job in jobs.dlq.list()] == [job_id]


def test_purge_asks_first_stating_the_count_then_deletes_only_the_selection(
    client: tuple[httpx.Client, CloudJobs],
) -> None:
    test_client, jobs = client
    doomed = [jobs.enqueue("note", Note(text=f"<bad {n}>")) for n in range(2)]
    kept = jobs.enqueue("note", Note(text="<kept>"))
    jobs.drain()
    token = _csrf(test_client.get("/dead-letters", headers=_bearer()).text)
    asked = test_client.post("/dead-letters/purge", data={"id": doomed, "csrf": token}, headers=_bearer())
    assert asked.status_code == 200
    assert "Purge 2 message(s)?" in asked.text
    assert len(jobs.dlq.list()) == 3  # asking deleted nothing
    done = test_client.post(
        "/dead-letters/purge",
        data={"id": doomed, "csrf": _csrf(asked.text), "confirm": "yes"},
        headers=_bearer(),
    )
    assert done.status_code == 303
    assert "purged=2" in done.headers["location"]
    assert [job.job_id for job in jobs.dlq.list()] == [kept]


def test_read_only_shows_no_actions_and_refuses_them() -> None:
    jobs, _ = _jobs()
    job_id = jobs.enqueue("note", Note(text="<bad>"))
    jobs.drain()
    with (
        serving(create_app(jobs, auth=NoAuth("tests"), read_only=True)) as url,
        httpx.Client(base_url=url) as test_client,
    ):
        page = test_client.get("/dead-letters").text
        assert "Redrive selected" not in page
        assert "read-only" in page
        token = _csrf(page)
        refused = test_client.post("/dead-letters/redrive", data={"id": job_id, "csrf": token})
        assert refused.status_code == 403
    assert len(jobs.dlq.list()) == 1


def test_mounting_needs_an_explicit_authentication_choice() -> None:
    jobs, _ = _jobs()
    with pytest.raises(TypeError):
        create_app(jobs)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        TokenAuth("short")
    with pytest.raises(ConfigurationError):
        NoAuth(" ")


def test_the_command_refuses_a_non_loopback_address_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDJOBS_DASHBOARD_TOKEN", raising=False)
    assert (
        cli_main(["dashboard", "tests.dashboard.test_dashboard_http:APP", "--host", "0.0.0.0"]) == EXIT_USAGE
    )


APP = _jobs()[0]
