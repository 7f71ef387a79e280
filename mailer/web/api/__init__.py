"""The JSON API under /api/v1: bearer tokens, problem+json errors, a generated OpenAPI document.

Every endpoint is declared with `allow` (roles) and `operation` (schemas); the routes below
are the whole API, and `/api/v1/openapi.json` is built from them.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer.enums import Role
from mailer.errors import MailerError
from mailer.web import auth
from mailer.web.api import campaigns, records, templates
from mailer.web.context import AppContext, actor
from mailer.web.openapi import document
from mailer.web.problems import (
    InvalidInput,
    handle_crash,
    handle_http,
    handle_invalid,
    handle_mailer,
    problem,
)
from mailer.web.security import BodyLimitMiddleware, UrlTextMiddleware, client_ip

PREFIX = "/api/v1"
#: The largest request body the API reads: a CSV import of 20 MB.
MAX_BODY_BYTES = 21 * 1024 * 1024


def routes() -> list[BaseRoute]:
    c = campaigns
    r = records
    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/campaigns", c.list_campaigns, methods=["GET"]),
        Route("/campaigns", c.create_campaign, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}", c.get_campaign, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}", c.edit_campaign, methods=["PATCH"]),
        Route("/campaigns/{campaign_id:id}/preview", c.preview_campaign, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/test-send", c.test_send, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/launch", c.launch, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/pause", c.pause, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/resume", c.resume, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/cancel", c.cancel, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/report", c.report, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/report.csv", c.report_csv, methods=["GET"]),
        Route("/audiences/check", c.check_rule, methods=["POST"]),
        Route("/audiences/count", c.count_audience, methods=["POST"]),
        Route("/templates", templates.list_templates, methods=["GET"]),
        Route("/templates/stored/{category}/{name}", templates.get_stored, methods=["GET"]),
        Route(
            "/templates/stored/{category}/{name}/versions",
            templates.save_version,
            methods=["POST"],
        ),
        *r.ROUTES,
    ]


async def openapi(request: Request) -> Response:
    """This API's OpenAPI 3.1 document."""
    return JSONResponse(
        document(list(request.app.routes), title="mailer API", version="1", prefix=PREFIX)
    )


class BearerMiddleware:
    """Puts the actor of a valid `Authorization: Bearer` token on `request.state.actor`."""

    def __init__(self, app: ASGIApp, *, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            header = request.headers.get("authorization", "")
            scheme, _, token = header.partition(" ")
            found = None
            if scheme.lower() == "bearer" and token.strip():
                ip = client_ip(scope, trusted_proxy=self.ctx.runtime.settings.trusted_proxy)
                found = await run_in_threadpool(
                    auth.actor_for_token, self.ctx.runtime, token.strip(), ip=ip
                )
            scope.setdefault("state", {})["actor"] = found
        await self.app(scope, receive, send)


async def _anonymous(request: Request) -> Response:
    return problem(
        401,
        "send a valid API token: Authorization: Bearer <token> (admins create tokens)",
        headers={"www-authenticate": 'Bearer realm="mailer"'},
    )


def _refuse_url(status: int, field: str, message: str) -> Response:
    errors = [{"field": field, "message": message}]
    return problem(status, f"the {field} {message}", errors=errors)


async def _forbidden(request: Request, allowed: Iterable[Role]) -> Response:
    names = " or ".join(sorted(r.value for r in allowed))
    return problem(403, f"this needs the role {names}")


async def _must_enroll(request: Request) -> Response:
    who = actor(request)
    return problem(
        403,
        f"this token acts as the admin {who.username!r}, and every admin must sign in with an "
        f"authenticator app (TOTP), which {who.username} has not set up: {who.username} signs "
        "in at /admin/ and sets it up, then this token works again",
    )


def create_api_app(ctx: AppContext) -> Starlette:
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES),
            Middleware(UrlTextMiddleware, refuse=_refuse_url),
            Middleware(BearerMiddleware, ctx=ctx),
        ],
        exception_handlers={
            HTTPException: handle_http,
            InvalidInput: handle_invalid,
            MailerError: handle_mailer,
            Exception: handle_crash,
        },
    )
    app.state.ctx = ctx
    app.state.on_anonymous = _anonymous
    app.state.on_forbidden = _forbidden
    app.state.on_must_enroll = _must_enroll
    return app
