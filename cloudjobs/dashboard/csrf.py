"""Cross-site request forgery: every state-changing request is a POST that carries the token of a
cookie set by the dashboard (double submit), from a page of the same origin.

The cookie is ``SameSite=Strict`` and ``HttpOnly``; forms carry the token in a hidden field; a POST
whose field does not match the cookie, or whose ``Origin`` names another host, is refused with 403.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE: Final = "cloudjobs_csrf"
FIELD: Final = "csrf"


def token_of(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one (set by :func:`remember`)."""
    existing = request.cookies.get(COOKIE)
    return existing if existing and len(existing) >= 32 else secrets.token_urlsafe(32)


def is_valid(request: Request, submitted: object) -> bool:
    """Whether a POST carries the cookie's token and comes from this origin."""
    cookie = request.cookies.get(COOKIE)
    if not cookie or not isinstance(submitted, str):
        return False
    if not hmac.compare_digest(cookie.encode(), submitted.encode()):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return True
