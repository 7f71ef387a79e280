"""Admin screens for users and API tokens: create, change role, disable/enable, reset password,
reset a second factor, sign out everywhere, create a token (shown once) and revoke it, and
require TOTP of every admin. Every change is a core call in `mailer.access`, which checks the
actor and writes the audit log."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer import access
from mailer.access import totp
from mailer.enums import Role
from mailer.errors import MailerError
from mailer.web.admin.pages import checked_form, done, field, render
from mailer.web.context import actor, context
from mailer.web.guard import allow

#: Token lifetimes offered by the form, in days (None: never expires, still revocable).
EXPIRIES = {"30": 30, "90": 90, "365": 365, "never": None}


def _page(request: Request, status_code: int = 200, **extra: Any) -> Response:
    with context(request).runtime.sessions() as session:
        who = actor(request)
        users = access.list_user_infos(session, who)
        tokens = access.list_tokens(session, who)
        totp_required = totp.totp_required_for_admins(session)
        pending = totp.admins_without_totp(session)
    values = {"values": {}, "error": "", "new_token": None, **extra}
    return render(
        request,
        "users.html",
        status_code=status_code,
        users=users,
        tokens=tokens,
        roles=list(Role),
        expiries=list(EXPIRIES),
        totp_required=totp_required,
        admins_without_totp=pending,
        **values,
    )


@allow(Role.ADMIN)
async def users_page(request: Request) -> Response:
    """Users and API tokens."""
    return await run_in_threadpool(_page, request)


@allow(Role.ADMIN)
async def create(request: Request) -> Response:
    """Add a user with a role and a first password."""
    form = await checked_form(request)
    values = {k: field(form, k) for k in ("username", "display_name", "email", "role", "phone")}
    password = str(form.get("password", ""))

    def run() -> None:
        with context(request).runtime.sessions.begin() as session:
            access.create_user(session, actor(request), password=password, **values)

    try:
        await run_in_threadpool(run)
    except access.UserError as exc:
        message = str(exc)
        return await run_in_threadpool(lambda: _page(request, 422, values=values, error=message))
    return done(request, f"/admin/users?notice=created&user={values['username']}")


def _user_action(kind: str) -> Any:
    async def endpoint(request: Request) -> Response:
        form = await checked_form(request)
        username = request.path_params["username"]
        who = actor(request)

        def run() -> None:
            with context(request).runtime.sessions.begin() as session:
                if kind == "role":
                    access.set_role(session, who, username, field(form, "role"))
                elif kind == "disable":
                    access.disable_user(session, who, username)
                elif kind == "enable":
                    access.enable_user(session, who, username)
                elif kind == "password":
                    access.set_password(session, who, username, str(form.get("password", "")))
                elif kind == "reset-totp":
                    totp.disable_totp(session, who, username)
                else:
                    access.close_all_sessions(session, who, username)

        try:
            await run_in_threadpool(run)
        except (access.UserError, totp.TotpError) as exc:
            message = str(exc)
            return await run_in_threadpool(lambda: _page(request, 422, error=message))
        return done(request, f"/admin/users?notice={kind}&user={username}")

    endpoint.__name__ = f"user_{kind.replace('-', '_')}"
    endpoint.__doc__ = {
        "role": "Change a user's role.",
        "disable": "Disable a user: their sessions and tokens stop working at once.",
        "enable": "Enable a disabled user again.",
        "password": "Set a new password for a user (their sessions end).",
        "reset-totp": "Turn off a user's second factor (a lost phone): they set it up again.",
        "logout-everywhere": "Sign a user out of every session.",
    }[kind]
    return allow(Role.ADMIN)(endpoint)


set_role = _user_action("role")
disable = _user_action("disable")
enable = _user_action("enable")
reset_password = _user_action("password")
reset_totp = _user_action("reset-totp")
logout_everywhere = _user_action("logout-everywhere")


@allow(Role.ADMIN)
async def require_totp(request: Request) -> Response:
    """Require (or stop requiring) an authenticator app of every admin at sign-in."""
    form = await checked_form(request)
    state = field(form, "required")
    if state not in ("on", "off"):
        return await run_in_threadpool(
            lambda: _page(request, 422, error=f"required={state!r}: send 'on' or 'off'")
        )

    def run() -> None:
        with context(request).runtime.sessions.begin() as session:
            totp.set_totp_required_for_admins(session, actor(request), state == "on")

    try:
        await run_in_threadpool(run)
    except totp.TotpError as exc:
        message = str(exc)
        return await run_in_threadpool(lambda: _page(request, 422, error=message))
    return done(request, f"/admin/users?notice=totp-{state}")


@allow(Role.ADMIN)
async def create_token(request: Request) -> Response:
    """Create an API token acting as a user; the secret is shown once, on this page only."""
    form = await checked_form(request)
    expiry = field(form, "expires", "90")

    def run() -> Any:
        with context(request).runtime.sessions.begin() as session:
            return access.create_api_token(
                session,
                actor(request),
                name=field(form, "name"),
                username=field(form, "username") or None,
                expires_in_days=EXPIRIES.get(expiry, 90),
            )

    try:
        created = await run_in_threadpool(run)
    except MailerError as exc:
        message = str(exc)
        return await run_in_threadpool(lambda: _page(request, 422, error=message))
    return await run_in_threadpool(lambda: _page(request, 201, new_token=created))


@allow(Role.ADMIN)
async def revoke_token(request: Request) -> Response:
    """Revoke an API token at once."""
    await checked_form(request)
    public_id = request.path_params["public_id"]

    def run() -> None:
        with context(request).runtime.sessions.begin() as session:
            access.revoke_token(session, actor(request), public_id)

    await run_in_threadpool(run)
    return done(request, "/admin/users?notice=revoked")


ROUTES: list[BaseRoute] = [
    Route("/users", users_page, methods=["GET"]),
    Route("/users", create, methods=["POST"]),
    Route("/users/{username}/role", set_role, methods=["POST"]),
    Route("/users/{username}/disable", disable, methods=["POST"]),
    Route("/users/{username}/enable", enable, methods=["POST"]),
    Route("/users/{username}/password", reset_password, methods=["POST"]),
    Route("/users/{username}/reset-totp", reset_totp, methods=["POST"]),
    Route("/users/{username}/logout-everywhere", logout_everywhere, methods=["POST"]),
    Route("/settings/totp-required", require_totp, methods=["POST"]),
    Route("/tokens", create_token, methods=["POST"]),
    Route("/tokens/{public_id}/revoke", revoke_token, methods=["POST"]),
]
