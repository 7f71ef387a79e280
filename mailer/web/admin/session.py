"""Signing in and out of the admin app."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mailer.web import auth
from mailer.web.admin.pages import (
    COOKIE,
    COOKIE_PATH,
    ENROLL_PAGE,
    checked_form,
    read_form,
    redirect,
    render,
)
from mailer.web.context import actor, context, ip_of
from mailer.web.guard import allow


def _safe_next(value: str) -> str:
    """Only a path inside the admin app: never an open redirect to another site."""
    if value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/"


async def login_page(request: Request) -> Response:
    """The sign-in form."""
    if getattr(request.state, "actor", None) is not None:
        return redirect(_safe_next(request.query_params.get("next", "")))
    return render(
        request,
        "login.html",
        next=_safe_next(request.query_params.get("next", "")),
        username="",
        password="",
        error="",
        needs_code=False,
    )


async def login(request: Request) -> Response:
    """Check the password (off the event loop), then a new session and a new cookie."""
    form = await read_form(request)
    username = str(form.get("username", "")).strip()[:100]
    password = str(form.get("password", ""))[:1000]
    code = str(form.get("code", "")).strip()[:10]
    target = _safe_next(str(form.get("next", "")))
    ctx = context(request)
    result = await auth.login(
        ctx.runtime,
        ctx.throttle,
        username,
        password,
        code=code,
        ip=ip_of(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    if isinstance(result, auth.LoginFailure):
        needs_code = result.reason in ("totp_required", "totp_invalid")
        status = {"throttled": 429, "invalid": 401, "totp_unreadable": 401}.get(result.reason, 200)
        page = render(
            request,
            "login.html",
            status_code=status,
            next=target,
            username=username,
            password=password if needs_code else "",
            needs_code=needs_code,
            error=result.message[0].upper() + result.message[1:] + ".",
        )
        if result.retry_after_s:
            page.headers["retry-after"] = str(result.retry_after_s)
        return page
    session_id, who = result
    # an admin who must enroll TOTP can do nothing else: straight to the enrollment page
    response = redirect(ENROLL_PAGE if who.must_enroll else target)
    is_https = request.url.scheme == "https" or ctx.runtime.settings.public_base_url.startswith(
        "https:"
    )
    # no max_age/expires: the cookie ends with the browser session (DESIGN: session cookies only)
    response.set_cookie(
        COOKIE, session_id, path=COOKIE_PATH, httponly=True, samesite="lax", secure=is_https
    )
    return response


@allow(while_enrolling=True)
async def logout(request: Request) -> Response:
    """End this session."""
    await checked_form(request)
    auth.logout(context(request).runtime, request.state.session_id, actor(request))
    response = redirect("/admin/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@allow(while_enrolling=True)
async def logout_everywhere(request: Request) -> Response:
    """End every session of the signed-in user, on every device."""
    await checked_form(request)
    auth.logout_everywhere(context(request).runtime, actor(request))
    response = redirect("/admin/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response
