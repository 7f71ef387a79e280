"""The admin app under /admin: server-rendered pages for marketing, account managers and admins.

Every action is a real `<form method=post>` (with the session's CSRF token) that works without
JavaScript; htmx, vendored, makes some of them update in place. The routes below are the whole
app; each endpoint says which roles may open it (`allow`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.access.actor import ENROLL_FIRST
from mailer.enums import Role
from mailer.errors import MailerError
from mailer.web import auth
from mailer.web.admin import (
    account,
    campaigns,
    compliance,
    contacts,
    records,
    session,
    templates,
    users,
)
from mailer.web.admin.pages import (
    COOKIE,
    ENROLL_PAGE,
    is_htmx,
    make_environment,
    redirect,
    render,
)
from mailer.web.context import AppContext
from mailer.web.guard import OriginCheckMiddleware
from mailer.web.problems import allowed_methods, status_for
from mailer.web.security import BodyLimitMiddleware, UrlTextMiddleware, client_ip

STATIC = Path(__file__).resolve().parent.parent / "static"

#: The admin pages load scripts, styles and frames from this site only; the preview of an
#: email's HTML gets a stricter policy of its own (see campaigns.preview_html).
ADMIN_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


#: The largest request the admin app reads: a CSV import of 20 MB and its form fields.
MAX_BODY_BYTES = 21 * 1024 * 1024


def routes() -> list[BaseRoute]:
    c = campaigns
    r = records
    s = session
    return [
        Mount("/assets", StaticFiles(directory=STATIC), name="assets"),
        Route("/login", s.login_page, methods=["GET"]),
        Route("/login", s.login, methods=["POST"]),
        Route("/logout", s.logout, methods=["POST"]),
        Route("/logout-everywhere", s.logout_everywhere, methods=["POST"]),
        Route("/", r.dashboard, methods=["GET"]),
        Route("/campaigns", c.campaign_list, methods=["GET"]),
        Route("/campaigns/new", c.new_campaign, methods=["GET"]),
        Route("/campaigns", c.create, methods=["POST"]),
        Route("/audience/count", c.audience_count, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}", c.campaign_page, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/edit", c.edit_page, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/edit", c.edit, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/progress", c.progress, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/preview", c.preview, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/preview.html", c.preview_html, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/test-send", c.test_send, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/launch", c.launch_page, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/launch", c.launch, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/pause", c.pause, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/resume", c.resume, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/cancel", c.cancel, methods=["POST"]),
        Route("/campaigns/{campaign_id:id}/report", c.report, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/report.csv", c.report_csv, methods=["GET"]),
        Route("/campaigns/{campaign_id:id}/sample.html", c.sample_html, methods=["GET"]),
        *templates.ROUTES,
        *contacts.ROUTES,
        *compliance.ROUTES,
        *users.ROUTES,
        *account.ROUTES,
    ]


class SessionMiddleware:
    """Puts the signed-in actor (from the session cookie) on `request.state`, or None."""

    def __init__(self, app: ASGIApp, *, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            session_id = request.cookies.get(COOKIE, "")
            state = scope.setdefault("state", {})
            state["actor"] = None
            state["session_id"] = ""
            if session_id:
                ip = client_ip(scope, trusted_proxy=self.ctx.runtime.settings.trusted_proxy)
                found = await run_in_threadpool(
                    auth.actor_for_session, self.ctx.runtime, session_id, ip=ip
                )
                if found is not None:
                    state["actor"] = found
                    state["session_id"] = session_id
        await self.app(scope, receive, send)


class HeadersMiddleware:
    """The admin's own CSP (scripts from this site) and no caching of its pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        is_asset = str(scope.get("path", "")).startswith("/admin/assets/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", ADMIN_CSP)
                # pages show contacts: never kept in a cache; the stylesheet and htmx may be
                headers.setdefault("cache-control", "max-age=3600" if is_asset else "no-store")
                headers.setdefault("x-frame-options", "DENY")
            await send(message)

        await self.app(scope, receive, with_headers)


async def _anonymous(request: Request) -> Response:
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"/admin/login?next={quote(target)}")
    return redirect("/admin/login")


async def _forbidden(request: Request, allowed: Iterable[Role]) -> Response:
    names = " or ".join(sorted(r.value for r in allowed))
    return render(
        request,
        "error.html",
        status_code=403,
        title="Not for your role",
        detail=f"This page needs the role {names}.",
    )


async def _must_enroll(request: Request) -> Response:
    # pages send the admin to enroll; an action is refused (never looks like it happened)
    if request.method in ("GET", "HEAD") and not is_htmx(request):
        return redirect(ENROLL_PAGE)
    response = render(
        request,
        "error.html",
        status_code=403,
        title="Set up two-step sign-in first",
        detail=ENROLL_FIRST,
        link_href=ENROLL_PAGE,
        link_text="Set up your authenticator app",
    )
    if is_htmx(request):
        response.headers["hx-redirect"] = ENROLL_PAGE
    return response


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        status, detail = exc.status_code, str(exc.detail)
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        if status == 405:
            headers["allow"] = ", ".join(allowed_methods(request))
    elif isinstance(exc, MailerError):
        status, detail, headers = status_for(exc), str(exc), {}
    else:
        status, detail, headers = 500, "Something went wrong; the server log has the details.", {}
    titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed here", 409: "Not now"}
    response = render(
        request,
        "error.html",
        status_code=status,
        title=titles.get(status, "Something went wrong"),
        detail=detail,
    )
    response.headers.update(headers)
    return response


def create_admin_app(ctx: AppContext) -> Starlette:
    app = Starlette(
        routes=routes(),
        middleware=[
            Middleware(HeadersMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES),
            Middleware(OriginCheckMiddleware),
            Middleware(UrlTextMiddleware),
            Middleware(SessionMiddleware, ctx=ctx),
        ],
        exception_handlers={HTTPException: _error, MailerError: _error, Exception: _error},
    )
    app.state.ctx = ctx
    app.state.env = make_environment(ctx.runtime.settings)
    app.state.on_anonymous = _anonymous
    app.state.on_forbidden = _forbidden
    app.state.on_must_enroll = _must_enroll
    return app
