"""The public handlers: one-click unsubscribe, preference center, policy pages, health.

Handlers are thin: read the token and the form, call `mailer.consent` or `mailer.policy`
in a worker thread (the database is synchronous), render a page. A bad token, or a token of a
contact since erased, gets the same 404 page as an unknown path, so nothing tells who exists.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailer import consent
from mailer.enums import ALL_MARKETING, Category, OptOutSource
from mailer.errors import TokenError
from mailer.models import Contact
from mailer.policy import text as policy_text
from mailer.runtime import Runtime
from mailer.tokens import RecipientToken, TokenSigner
from mailer.web.pages import mask_address, render
from mailer.web.security import client_ip, is_cross_site, origin_of

#: Who the audit log names for a change a recipient made from a link.
RECIPIENT_ACTOR = "recipient"
#: How long /healthz reuses its last database check.
HEALTH_CACHE_S = 1.0
#: What a policy version label can be ("1", "2026-11"); anything else is no page of ours.
_VERSION_LABEL = re.compile(r"[A-Za-z0-9._-]{1,32}")
#: The largest form body accepted: the forms here hold a handful of short fields.
MAX_FORM_BYTES = 16 * 1024


@dataclass
class WebContext:
    """What the handlers share, built once per app."""

    runtime: Runtime
    env: Environment
    signer: TokenSigner
    #: (monotonic time, result) of the last database check of /healthz.
    health: tuple[float, bool] = (-math.inf, False)

    def read_token(self, raw: str) -> RecipientToken:
        try:
            return self.signer.read(raw)
        except TokenError:
            raise HTTPException(404) from None

    def refuse_cross_site(self, request: Request) -> None:
        """403 for a form another site's page posted (it could opt a contact back in)."""
        allowed = (origin_of(self.runtime.settings.public_base_url),)
        if is_cross_site(request.scope, allowed_origins=allowed):
            raise HTTPException(403)

    def visitor(self, request: Request) -> dict[str, str]:
        """The IP and user agent recorded with a consent change."""
        ip = client_ip(request.scope, trusted_proxy=self.runtime.settings.trusted_proxy)
        return {"ip": ip, "user_agent": request.headers.get("user-agent", "")}


async def _read_form(request: Request) -> FormData:
    """The posted form, refusing bodies far larger than any of our forms (413)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise HTTPException(413)
    form = await request.form(max_files=1, max_fields=20, max_part_size=MAX_FORM_BYTES)
    await form.close()
    return form


def _ctx(request: Request) -> WebContext:
    return request.app.state.web  # type: ignore[no-any-return]


def _page_state(session: Session, token: RecipientToken) -> dict[str, Any]:
    """The contact's masked address, kind of choices and current preferences; 404 if gone."""
    contact = session.get(Contact, token.contact_id)
    if contact is None:
        raise HTTPException(404)
    prefs = consent.preferences(session, contact.id)
    return {
        "address": mask_address(contact.email),
        "prefs": prefs,
        "is_client": Category.SERVICE in prefs,
        "category": token.category,
    }


def _read_state(ctx: WebContext, token: RecipientToken) -> dict[str, Any]:
    with ctx.runtime.sessions() as session:
        return _page_state(session, token)


async def unsubscribe_page(request: Request) -> Response:
    """GET /u/{token}: a confirm button and the preference center; changes nothing."""
    ctx = _ctx(request)
    token = ctx.read_token(request.path_params["token"])
    state = await run_in_threadpool(_read_state, ctx, token)
    return render(ctx.env, "unsubscribe.html", token=request.path_params["token"], **state)


def _unsubscribe(
    ctx: WebContext, token: RecipientToken, source: OptOutSource, who: dict
) -> dict[str, Any]:
    """Opt out of the token's category (policy: nothing to do); what the answer page shows."""
    with ctx.runtime.sessions.begin() as session:
        if token.category.allows_opt_out:
            # raises NotFoundError (a 404 page) when the contact is gone
            consent.opt_out(
                session,
                contact_id=token.contact_id,
                scope=token.category,
                source=source,
                send_id=token.send_id or None,
                actor=RECIPIENT_ACTOR,
                **who,
            )
        contact = session.get(Contact, token.contact_id)  # already loaded: no query
        if contact is None:
            raise HTTPException(404)
        return {"address": mask_address(contact.email), "category": token.category}


async def one_click(request: Request) -> Response:
    """POST /u/{token}: RFC 8058 one-click (or the confirm button); 200, never a redirect."""
    ctx = _ctx(request)
    raw = request.path_params["token"]
    token = ctx.read_token(raw)
    form = await _read_form(request)
    is_one_click = form.get("List-Unsubscribe") == "One-Click"
    source = OptOutSource.ONE_CLICK if is_one_click else OptOutSource.CONFIRM_PAGE
    state = await run_in_threadpool(_unsubscribe, ctx, token, source, ctx.visitor(request))
    # Policy notices are mandatory: their links lead to preferences, and this page says why.
    is_required = not token.category.allows_opt_out
    return render(ctx.env, "unsubscribed.html", token=raw, is_required=is_required, **state)


def _apply_preferences(
    ctx: WebContext, token: RecipientToken, action: str, form: FormData, who: dict
) -> dict[str, Any]:
    """Opt out of or back into each scope whose wanted state differs; the page state after."""
    changed: list[str] = []
    with ctx.runtime.sessions.begin() as session:
        current = _page_state(session, token)["prefs"]  # 404 before anything else
        if action == "unsubscribe_all":
            wanted = {ALL_MARKETING: False}
        elif action == "save":
            # An unticked checkbox is simply absent from the form: absent means "stop".
            wanted = {scope: form.get(scope) == "on" for scope in current}
        else:
            raise HTTPException(400)
        for scope, is_receiving in current.items():
            want = wanted.get(scope, is_receiving)
            if want == is_receiving:
                continue
            change = consent.opt_in if want else consent.opt_out
            kwargs: dict[str, Any] = {"send_id": token.send_id or None} if not want else {}
            if change(
                session,
                contact_id=token.contact_id,
                scope=scope,
                source=OptOutSource.PREFERENCES,
                actor=RECIPIENT_ACTOR,
                **who,
                **kwargs,
            ):
                changed.append(scope)
        state = _page_state(session, token)
    state["notice"] = "Your preferences are saved." if changed else "Nothing changed."
    return state


async def preferences_page(request: Request) -> Response:
    """GET|POST /preferences/{token}: every category the contact may receive, switchable."""
    ctx = _ctx(request)
    raw = request.path_params["token"]
    token = ctx.read_token(raw)
    if request.method == "POST":
        ctx.refuse_cross_site(request)  # not on one-click: providers POST that cross-site
        form = await _read_form(request)
        action = str(form.get("action") or "")
        who = ctx.visitor(request)
        state = await run_in_threadpool(_apply_preferences, ctx, token, action, form, who)
    else:
        state = await run_in_threadpool(_read_state, ctx, token)
        state["notice"] = ""
    return render(ctx.env, "preferences.html", token=raw, **state)


def _policy(ctx: WebContext, label: str | None) -> dict[str, Any]:
    with ctx.runtime.sessions() as session:
        version = (
            policy_text.get_version(session, label)
            if label
            else policy_text.current_version(session)
        )
        if version is None and policy_text.ensure_first_version(session):
            session.commit()
            version = policy_text.get_version(session, label or policy_text.FIRST_VERSION_LABEL)
        if version is None:
            raise HTTPException(404)
        current = version if label is None else policy_text.current_version(session)
        return {
            "version": version,
            "previous": policy_text.previous_version(session, version),
            "changes": policy_text.changes_from_previous(session, version),
            "versions": policy_text.all_versions(session),
            "current": current,
            "is_upcoming": current is not None and version.effective_on > current.effective_on,
        }


async def privacy_page(request: Request) -> Response:
    """GET /privacy and /privacy/{version}: the text, its date, and what changed."""
    ctx = _ctx(request)
    label = request.path_params.get("version")
    if label is not None and not _VERSION_LABEL.fullmatch(label):
        raise HTTPException(404)  # e.g. a NUL byte, which PostgreSQL refuses in any text
    state = await run_in_threadpool(_policy, ctx, label)
    return render(ctx.env, "privacy.html", **state)


def _database_ok(ctx: WebContext) -> bool:
    now = time.monotonic()
    checked_at, was_ok = ctx.health
    if now - checked_at < HEALTH_CACHE_S:
        return was_ok
    try:
        with ctx.runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        is_ok = True
    except Exception:
        is_ok = False
    ctx.health = (now, is_ok)
    return is_ok


async def healthz(request: Request) -> Response:
    """GET /healthz: 200 when the database answers a trivial query, else 503.

    The answer is reused for HEALTH_CACHE_S, so a flood of checks costs the database one
    query a second at most."""
    is_ok = await run_in_threadpool(_database_ok, _ctx(request))
    body = {"status": "ok" if is_ok else "unavailable", "database": "ok" if is_ok else "down"}
    return JSONResponse(body, status_code=200 if is_ok else 503)
