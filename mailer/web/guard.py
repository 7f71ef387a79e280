"""What stands in front of the admin app and the API: CSRF checks and the role gate.

CSRF has two layers. `OriginCheckMiddleware` refuses an unsafe request that a browser says
came from another site (`Sec-Fetch-Site`, else `Origin` against `Host`); requests with neither
header (curl, the API's clients) pass to the second layer. In the admin app every form carries
a token derived from the session id (`csrf_token`), checked on every unsafe request, and a new
session at login gives a new token. The API needs no token: it authenticates with a bearer
header, which a browser never adds on its own.

`allow(*roles)` marks an endpoint with the roles that may call it; the route × role test reads
these marks from the app's own router, so no route is left unguarded. An admin who must enroll
TOTP (`Actor.must_enroll`) reaches only the endpoints marked `while_enrolling`; every other one
answers with the app's `on_must_enroll` hook (the admin app sends them to enroll, the API
refuses with 403).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.enums import Role

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Every role: for pages any signed-in user may open.
ANY_ROLE = frozenset(Role)

Endpoint = Callable[[Request], Awaitable[Response]]


class OriginCheckMiddleware:
    """403 for an unsafe request that a browser marks as coming from another origin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            reason = cross_origin_reason(Headers(scope=scope))
            if reason:
                response = PlainTextResponse(
                    f"Refused: {reason}. Submit the form from this site's own pages.\n",
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_origin_reason(headers: Headers) -> str:
    """Why the request looks cross-origin, or "" if it does not."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return "" if site in ("same-origin", "none") else f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin is None:
        return ""  # not a browser, or a very old one: the CSRF token still has to match
    host = headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc != host:
        return f"Origin {origin!r} is not this site ({host!r})"
    return ""


def csrf_token(secret: bytes, session_id: str) -> str:
    """The form token of one session: a MAC of its id, so nothing more is stored."""
    return hmac.new(secret, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def is_valid_csrf(secret: bytes, session_id: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(secret, session_id), given)


def allow(*roles: Role, while_enrolling: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Let only `roles` call the endpoint (the app's auth hook says what anonymous gets).

    `while_enrolling`: an admin who must first enroll TOTP may call it too (their account page,
    enrolling, signing out).
    """
    allowed = frozenset(roles) or ANY_ROLE

    def mark(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            actor = getattr(request.state, "actor", None)
            if actor is None:
                return await request.app.state.on_anonymous(request)
            if actor.must_enroll and not while_enrolling:
                return await request.app.state.on_must_enroll(request)
            if Role(actor.role) not in allowed:
                return await request.app.state.on_forbidden(request, allowed)
            return await endpoint(request)

        guarded.allowed_roles = allowed  # type: ignore[attr-defined]
        guarded.allowed_while_enrolling = while_enrolling  # type: ignore[attr-defined]
        return guarded

    return mark


def allowed_roles(endpoint: Any) -> frozenset[Role] | None:
    """The roles `allow` gave the endpoint, or None for a public one."""
    return getattr(endpoint, "allowed_roles", None)


def allowed_while_enrolling(endpoint: Any) -> bool:
    """True when an admin who must first enroll TOTP may call the endpoint."""
    return bool(getattr(endpoint, "allowed_while_enrolling", False))
