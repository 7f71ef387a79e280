"""The admin pages' Jinja2 environment, rendering, forms and the session cookie."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mailer.config import Settings
from mailer.contacts.compliance import REASON_MAX_CHARS, REASON_MIN_CHARS
from mailer.enums import Role
from mailer.errors import ConfigError
from mailer.web.context import context
from mailer.web.guard import csrf_token, is_valid_csrf
from mailer.web.security import unstorable_text

#: The session cookie: only the admin app sees it (path), JavaScript never (HttpOnly), and it
#: ends with the browser session (no Max-Age or Expires).
COOKIE = "mailer_admin"
COOKIE_PATH = "/admin"
#: Where an admin who must enroll TOTP is sent (their account page, with the enrollment form).
ENROLL_PAGE = "/admin/account"
#: CPI is in Bend, Oregon: times are shown and entered in this zone unless the user picks one.
DEFAULT_ZONE = "America/Los_Angeles"
ZONES = [
    "America/Los_Angeles",
    "America/Denver",
    "America/Phoenix",
    "America/Chicago",
    "America/New_York",
    "America/Anchorage",
    "Pacific/Honolulu",
    "UTC",
]
HTMX = "vendor/htmx-2.0.11.min.js"

ROLE_NAMES = {
    Role.ADMIN: "Admin",
    Role.MARKETING: "Marketing",
    Role.ACCOUNT_MANAGER: "Account manager",
}


def make_environment(settings: Settings) -> Environment:
    folder = Path(settings.templates_dir) / "web" / "admin"
    if not (folder / "base.html").is_file():
        raise ConfigError(
            f"{folder / 'base.html'} not found: MAILER_TEMPLATES_DIR must point at the "
            "project's templates/ folder"
        )
    env = Environment(
        loader=FileSystemLoader(folder),
        autoescape=select_autoescape(["html"], default=True),
        undefined=ChainableUndefined,  # forms pass sparse error dicts: errors.rule.line
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        company_name=settings.company_name,
        htmx=HTMX,
        role_names=ROLE_NAMES,
        Role=Role,
        # the reason fields' minlength/maxlength: the core's own rule (compliance.check_reason)
        reason_min_chars=REASON_MIN_CHARS,
        reason_max_chars=REASON_MAX_CHARS,
    )
    env.filters["local"] = local_time
    env.filters["number"] = lambda n: f"{n:,}"
    return env


def local_time(value: dt.datetime | None, zone: str = DEFAULT_ZONE) -> str:
    if value is None:
        return "—"
    local = value.astimezone(ZoneInfo(zone))
    return local.strftime("%b %-d, %Y %-I:%M %p ") + (local.tzname() or "")


def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    env: Environment = request.app.state.env
    actor = getattr(request.state, "actor", None)
    session_id = getattr(request.state, "session_id", "")
    values = {
        "request": request,
        "actor": actor,
        "csrf_token": csrf_token(context(request).secret, session_id) if session_id else "",
        "is_htmx": is_htmx(request),
        "notice": request.query_params.get("notice", ""),
        **ctx,
    }
    return HTMLResponse(env.get_template(name).render(values), status_code=status_code)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def read_form(request: Request) -> FormData:
    """The posted form; a field no text can hold (a NUL) is refused (422) by its name."""
    form = await request.form()
    for name, value in form.multi_items():
        reason = unstorable_text(value) if isinstance(value, str) else ""
        if reason:
            raise HTTPException(422, f"The field {name!r} {reason} and send the form again.")
    return form


async def checked_form(request: Request) -> FormData:
    """The posted form, after its CSRF token matched this session's (403 otherwise)."""
    form = await read_form(request)
    session_id = getattr(request.state, "session_id", "")
    given = str(form.get("csrf_token") or request.headers.get("x-csrf-token") or "")
    if not session_id or not is_valid_csrf(context(request).secret, session_id, given):
        raise HTTPException(
            403, "This form has expired or did not come from this site. Reload the page and retry."
        )
    return form


def field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value.strip() if isinstance(value, str) else default


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def done(request: Request, url: str) -> Response:
    """After a successful post: htmx follows HX-Redirect, a plain form the 303."""
    if is_htmx(request):
        return Response(status_code=204, headers={"hx-redirect": url})
    return redirect(url)
