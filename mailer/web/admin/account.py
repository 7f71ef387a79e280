"""The signed-in user's own account: open sessions, the authenticator (TOTP) second factor,
and signing out everywhere."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer.access import list_sessions, totp
from mailer.models import User
from mailer.web.admin.pages import checked_form, done, field, render
from mailer.web.context import actor, context
from mailer.web.guard import allow


def _page(request: Request, status_code: int = 200, **extra: Any) -> Response:
    rt = context(request).runtime
    who = actor(request)
    with rt.sessions() as session:
        user = session.get(User, who.user_id)
        assert user is not None
        sessions = list_sessions(session, who, settings=rt.settings)
        values: dict[str, Any] = {
            "sessions": sessions,
            "totp_enabled": user.totp_enabled,
            "must_enroll": totp.needs_enrollment(session, who),
            "secret": "",
            "uri": "",
            "error": "",
        }
        if user.totp_secret and not user.totp_enabled:
            values["secret"] = user.totp_secret
            values["uri"] = totp.provisioning_uri(user.totp_secret, user.username)
    values.update(extra)
    return render(request, "account.html", status_code=status_code, **values)


@allow()
async def account_page(request: Request) -> Response:
    """Your sessions and second factor."""
    return await run_in_threadpool(_page, request)


@allow()
async def start_totp(request: Request) -> Response:
    """Issue a new authenticator secret to enroll (not active until a code confirms it)."""
    await checked_form(request)

    def run() -> None:
        with context(request).runtime.sessions.begin() as session:
            totp.begin_enrollment(session, actor(request))

    await run_in_threadpool(run)
    return done(request, "/admin/account")


@allow()
async def confirm_totp(request: Request) -> Response:
    """Turn the second factor on with the code the authenticator app shows now."""
    form = await checked_form(request)
    code = field(form, "code")

    def run() -> None:
        with context(request).runtime.sessions.begin() as session:
            totp.confirm_enrollment(session, actor(request), code)

    try:
        await run_in_threadpool(run)
    except totp.TotpError as exc:
        message = str(exc)
        return await run_in_threadpool(lambda: _page(request, 422, error=message))
    return done(request, "/admin/account?notice=totp")


ROUTES: list[BaseRoute] = [
    Route("/account", account_page, methods=["GET"]),
    Route("/account/totp", start_totp, methods=["POST"]),
    Route("/account/totp/confirm", confirm_totp, methods=["POST"]),
]
