"""The signed-in user's own account: open sessions, the authenticator (TOTP) second factor,
and signing out everywhere. It is the one page an admin who must enroll TOTP can reach."""

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
    # a transaction: showing a secret stored before sealing existed seals it
    with rt.sessions.begin() as session:
        user = session.get(User, who.user_id)
        assert user is not None
        sessions = list_sessions(session, who, settings=rt.settings)
        # the secret is shown only while enrolling, never once TOTP is on
        secret = totp.enrollment_secret(session, who, settings=rt.settings)
        values: dict[str, Any] = {
            "sessions": sessions,
            "totp_enabled": user.totp_enabled,
            "must_enroll": who.must_enroll,
            "secret": secret,
            "uri": totp.provisioning_uri(secret, user.username) if secret else "",
            "error": "",
        }
    values.update(extra)
    return render(request, "account.html", status_code=status_code, **values)


@allow(while_enrolling=True)
async def account_page(request: Request) -> Response:
    """Your sessions and second factor."""
    return await run_in_threadpool(_page, request)


@allow(while_enrolling=True)
async def start_totp(request: Request) -> Response:
    """Issue a new authenticator secret to enroll (not active until a code confirms it)."""
    await checked_form(request)
    rt = context(request).runtime

    def run() -> None:
        with rt.sessions.begin() as session:
            totp.begin_enrollment(session, actor(request), settings=rt.settings)

    try:
        await run_in_threadpool(run)
    except totp.TotpError as exc:
        message = str(exc)
        return await run_in_threadpool(lambda: _page(request, 409, error=message))
    return done(request, "/admin/account")


@allow(while_enrolling=True)
async def confirm_totp(request: Request) -> Response:
    """Turn the second factor on with the code the authenticator app shows now."""
    form = await checked_form(request)
    code = field(form, "code")
    rt = context(request).runtime

    def run() -> None:
        with rt.sessions.begin() as session:
            totp.confirm_enrollment(session, actor(request), code, settings=rt.settings)

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
