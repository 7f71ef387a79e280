"""Signing in and out of the admin app."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mailer.web import auth
from mailer.web.admin.pages import (
    COOKIE,
    COOKIE_PATH,
    checked_form,
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
        error="",
        needs_code=False,
    )


async def login(request: Request) -> Response:
    """Check the password (off the event loop), then a new session and a new cookie."""
    form = await request.form()
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    code = str(form.get("code", "")).strip()
    target = _safe_next(str(form.get("next", "")))
    rt = context(request).runtime
    try:
        session_id, _ = await auth.login(
            rt,
            username,
            password,
            code=code,
            ip=ip_of(request),
            user_agent=request.headers.get("user-agent", ""),
        )
    except auth.LoginThrottledError as exc:
        response = render(
            request,
            "login.html",
            status_code=429,
            next=target,
            username=username,
            needs_code=False,
            error=f"Too many sign-in attempts. Wait {exc.retry_after_s} seconds and try again.",
        )
        response.headers["retry-after"] = str(exc.retry_after_s)
        return response
    except auth.LoginError as exc:
        return render(
            request,
            "login.html",
            status_code=401 if not getattr(exc, "needs_code", False) else 200,
            next=target,
            username=username,
            needs_code=getattr(exc, "needs_code", False),
            error=str(exc) if getattr(exc, "needs_code", False) else "Wrong username or password.",
        )
    done = redirect(target)
    is_https = request.url.scheme == "https" or rt.settings.public_base_url.startswith("https:")
    done.set_cookie(
        COOKIE,
        session_id,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=is_https,
    )
    return done


@allow()
async def logout(request: Request) -> Response:
    """End this session."""
    await checked_form(request)
    auth.logout(context(request).runtime, request.state.session_id)
    response = redirect("/admin/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@allow()
async def logout_everywhere(request: Request) -> Response:
    """End every session of the signed-in user, on every device."""
    await checked_form(request)
    auth.logout_everywhere(context(request).runtime, actor(request))
    response = redirect("/admin/login")
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response
