"""A CloudJobs app on the memory backend for the command-line tests (``--app tests.unit.cli_app:jobs``).

Tests replace ``jobs`` and ``backend`` with a fresh pair from :func:`build` (``monkeypatch.setattr``),
so no state is shared between them.
"""

from __future__ import annotations

from pydantic import BaseModel

from cloudjobs import CloudJobs, MemoryBackend, PermanentError, Settings
from cloudjobs.idempotency.memory import MemoryIdempotencyStore


class Greeting(BaseModel):
    """The payload of ``greet``."""

    name: str


def build(
    *, refuse_unregistered: bool = False, bulk: MemoryBackend | None = None
) -> tuple[CloudJobs, MemoryBackend]:
    """A fresh app on a fresh memory queue (with a DLQ) and status store.

    Jobs: ``greet`` (a validated payload, keeps a status record) and ``explode`` (always fails
    permanently, so it lands in the DLQ). ``refuse_unregistered`` is passed to the app. With
    ``bulk``, the app has a second queue of that name, where ``export`` jobs (which fail
    permanently) go.
    """
    backend = MemoryBackend("cli-tests")
    app = CloudJobs(
        settings=Settings(_env_file=None, status_tracking=True),
        backend=backend,
        idempotency_store=MemoryIdempotencyStore(),
        refuse_unregistered=refuse_unregistered,
        queues={"bulk": bulk} if bulk is not None else None,
    )

    if bulk is not None:

        @app.job("export", queue="bulk", tenant="account")
        def export(payload: dict[str, object]) -> None:
            raise PermanentError("export failed")

    @app.job("greet", track_status=True)
    def greet(payload: Greeting) -> str:
        return f"hello {payload.name}"

    @app.job("explode")
    def explode(payload: dict[str, object]) -> None:
        raise PermanentError("boom")

    return app, backend


jobs, backend = build()
