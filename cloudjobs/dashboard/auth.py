"""Who may use the dashboard: an explicit choice, made by whoever serves it.

- :class:`TokenAuth`: a shared secret (``CLOUDJOBS_DASHBOARD_TOKEN`` for ``cloudjobs dashboard``),
  accepted as ``Authorization: Bearer <token>`` or as the password of HTTP Basic authentication (a
  browser asks for it); anything else gets 401.
- :class:`NoAuth`: nobody is asked, because something in front already decides (an SSO proxy, a
  service's own middleware); it names why, so the choice is visible where it is made.
- any callable taking the request and answering True (allowed) or False (401).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from cloudjobs.errors import ConfigurationError

MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Allow requests carrying ``token`` (Bearer, or the Basic password; any user name)."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(
                f"the dashboard token must be at least {MIN_TOKEN_LENGTH} characters",
                setting="CLOUDJOBS_DASHBOARD_TOKEN",
            )

    def __call__(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            _, _, password = decoded.partition(":")
            return hmac.compare_digest(password.encode(), self.token.encode())
        return False


@dataclass(frozen=True, slots=True)
class NoAuth:
    """Ask nobody: something in front of the dashboard authenticates (say what, in ``reason``)."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ConfigurationError("NoAuth needs the reason nobody is asked (e.g. 'behind the SSO proxy')")

    def __call__(self, request: Request) -> bool:
        return True


DashboardAuth = TokenAuth | NoAuth | Callable[[Request], bool]
"""How requests are authenticated: one of the classes above, or a callable of the request."""
