"""API: contacts (search, details, consent, suppressions, import), policy versions and
coverage, users, audit events."""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mailer import access, audit, policy, template_store
from mailer.contacts import import_contacts
from mailer.contacts.compliance import (
    REASON_MAX_CHARS,
    REASON_MIN_CHARS,
    ComplianceError,
    admin_opt_out,
    suppress_contact,
    unsuppress_contact,
)
from mailer.contacts.lookup import ContactRow, contact_record
from mailer.contacts.lookup import search_contacts as find_contacts
from mailer.enums import OPT_OUT_SCOPES, Role
from mailer.errors import ContactImportError, NotFoundError
from mailer.web.api.campaigns import PAGE_QUERY, decode_cursor, encode_cursor, parse_time
from mailer.web.context import actor, context, int_param
from mailer.web.guard import allow
from mailer.web.openapi import Param, operation, read_body, read_query
from mailer.web.problems import InvalidInput

EVERYONE = (Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
#: The largest CSV the import endpoint takes; bigger files go through `mailer import`.
MAX_IMPORT_BYTES = 20 * 1024 * 1024

CONTACT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string"},
        "name": {"type": "string"},
        "title": {"type": "string"},
        "organization": {"type": "string"},
        "organization_kind": {"type": "string"},
        "status": {"type": "string"},
    },
}
#: The reason of a consent or suppression change: the core's rule (`check_reason`), as a schema.
REASON = {"type": "string", "minLength": REASON_MIN_CHARS, "maxLength": REASON_MAX_CHARS}


def _contact_json(c: ContactRow) -> dict[str, Any]:
    return {
        "id": c.id,
        "email": c.email,
        "name": c.name,
        "title": c.title,
        "organization": c.organization_name,
        "organization_kind": c.organization_kind,
        "status": c.status,
    }


@allow(*EVERYONE)
@operation(
    "contacts",
    query=[*PAGE_QUERY, Param("q", {"type": "string", "maxLength": 200}, "text to look for")],
    response={
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": CONTACT},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
)
async def search_contacts(request: Request) -> Response:
    """Contacts whose email, name or organization contains `q` (account managers: own clients)."""
    q = read_query(request)
    after = decode_cursor(q["cursor"]) or 0

    def run() -> tuple[list[dict[str, Any]], int | None]:
        with context(request).runtime.sessions() as session:
            page = find_contacts(
                session, actor(request), q["q"] or "", limit=q["limit"], after_id=after
            )
            return [_contact_json(r) for r in page.items], page.next_after_id

    items, next_after = await run_in_threadpool(run)
    return JSONResponse(
        {
            "items": items,
            "next_cursor": encode_cursor(next_after) if next_after is not None else None,
        }
    )


@allow(*EVERYONE)
@operation(
    "contacts",
    response={
        "type": "object",
        "properties": {
            "contact": CONTACT,
            "preferences": {"type": "object"},
            "suppression": {"type": ["object", "null"]},
            "sends": {"type": "array"},
        },
    },
)
async def get_contact(request: Request) -> Response:
    """A contact: consent per category, suppression, the last 100 sends."""
    contact_id = int_param(request, "contact_id")

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions() as session:
            d = contact_record(session, actor(request), contact_id)
            return {
                "contact": _contact_json(d.contact),
                "preferences": d.consent,
                "suppression": {
                    "reason": d.suppression.reason,
                    "detail": d.suppression.detail,
                    "since": d.suppression.created_at.isoformat(),
                }
                if d.suppression
                else None,
                "sends": [
                    {
                        "campaign_id": s.campaign_id,
                        "campaign": s.campaign_name,
                        "category": s.category,
                        "status": s.status,
                        "skip_reason": s.skip_reason,
                        "smtp": s.smtp,
                        "at": s.at.isoformat() if s.at else None,
                    }
                    for s in d.sends
                ],
            }

    return JSONResponse(await run_in_threadpool(run))


def _contact_change(kind: str) -> Any:
    body_schema: dict[str, Any] = {
        "type": "object",
        "required": ["reason"],
        "properties": {"reason": REASON},
    }
    if kind == "opt-out":
        body_schema = {
            "type": "object",
            "required": ["reason", "scope"],
            "properties": {
                "reason": REASON,
                "scope": {"type": "string", "enum": [str(s) for s in OPT_OUT_SCOPES]},
            },
        }

    async def endpoint(request: Request) -> Response:
        body = await read_body(request)
        contact_id = int_param(request, "contact_id")

        def run() -> bool:
            who = actor(request)
            with context(request).runtime.sessions.begin() as session:
                if kind == "opt-out":
                    return admin_opt_out(session, who, contact_id, body["scope"], body["reason"])
                if kind == "suppress":
                    return suppress_contact(session, who, contact_id, body["reason"])
                return unsuppress_contact(session, who, contact_id, body["reason"])

        try:
            changed = await run_in_threadpool(run)
        except ComplianceError as exc:
            raise InvalidInput([{"field": "reason", "message": str(exc)}]) from exc
        return JSONResponse({"changed": changed})

    endpoint.__name__ = kind.replace("-", "_")
    endpoint.__doc__ = {
        "opt-out": "Opt the contact out of a scope on their behalf (admins), with a reason.",
        "suppress": "Stop all mail to the contact's address (admins), with a reason.",
        "unsuppress": "Lift the suppression of the contact's address (admins), with a reason.",
    }[kind]
    return allow(Role.ADMIN)(
        operation(
            "contacts",
            body=body_schema,
            response={"type": "object", "properties": {"changed": {"type": "boolean"}}},
        )(endpoint)
    )


opt_out = _contact_change("opt-out")
suppress = _contact_change("suppress")
unsuppress = _contact_change("unsuppress")


@allow(Role.ADMIN)
@operation(
    "contacts",
    query=[Param("dry_run", {"type": "string", "enum": ["true", "false"], "default": "true"})],
    response={"type": "object"},
)
async def import_csv(request: Request) -> Response:
    """Import a CSV sent as the body (text/csv); `dry_run=true`, the default, changes nothing."""
    q = read_query(request)
    if "csv" not in request.headers.get("content-type", ""):
        raise InvalidInput(
            [{"field": "body", "message": "send the CSV with Content-Type: text/csv"}]
        )
    data = await request.body()
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidInput([{"field": "body", "message": "over 20 MB: use `mailer import`"}])

    def run() -> Any:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "upload.csv")
            with open(path, "wb") as out:
                out.write(data)
            try:
                return import_contacts(
                    context(request).runtime,
                    path,
                    dry_run=q["dry_run"] != "false",
                    actor=actor(request),
                )
            except ContactImportError as exc:
                message = str(exc).removeprefix(f"{path}: ")
                raise ContactImportError("upload.csv", message, exc.problems) from exc

    report = await run_in_threadpool(run)
    return JSONResponse(report.as_dict())


def _version_json(v: Any) -> dict[str, Any]:
    return {
        "version": v.version,
        "effective_on": v.effective_on.isoformat(),
        "is_material": v.is_material,
        "summary": v.summary,
        "published_at": v.published_at.isoformat(),
        "published_by": v.published_by,
        "campaign_id": v.campaign_id,
    }


@allow(Role.ADMIN)
@operation("policy", response={"type": "object", "properties": {"items": {"type": "array"}}})
async def list_versions(request: Request) -> Response:
    """Every policy version, oldest first."""

    def run() -> list[dict[str, Any]]:
        with context(request).runtime.sessions.begin() as session:
            policy.ensure_first_version(session)
            return [_version_json(v) for v in policy.all_versions(session)]

    return JSONResponse({"items": await run_in_threadpool(run)})


@allow(Role.ADMIN)
@operation(
    "policy",
    body={
        "type": "object",
        "required": ["version", "effective_on", "summary", "text", "is_material"],
        "properties": {
            "version": {"type": "string", "minLength": 1, "maxLength": 32},
            "effective_on": {"type": "string", "maxLength": 10, "description": "YYYY-MM-DD"},
            "summary": {"type": "string", "minLength": 1, "maxLength": 20000},
            "text": {"type": "string", "minLength": 1, "maxLength": 500000},
            "is_material": {"type": "boolean"},
        },
    },
    response={"type": "object"},
    status=201,
)
async def publish_version(request: Request) -> Response:
    """Publish a version; a material one launches the notice to every client."""
    body = await read_body(request)
    try:
        effective_on = dt.date.fromisoformat(body["effective_on"])
    except ValueError:
        raise InvalidInput(
            [{"field": "effective_on", "message": "a date like 2027-01-01"}]
        ) from None
    ctx = context(request)
    report = await run_in_threadpool(
        lambda: policy.publish_policy(
            ctx.runtime,
            version=body["version"],
            effective_on=effective_on,
            text=body["text"],
            summary=body["summary"],
            is_material=body["is_material"],
            actor=actor(request),
            dispatch=ctx.dispatch,
        )
    )
    return JSONResponse(
        {"version": report.version, "campaign_id": report.campaign_id, "counts": report.counts},
        status_code=201,
    )


@allow(Role.ADMIN)
@operation("policy", response={"type": "object"})
async def version_coverage(request: Request) -> Response:
    """Which clients a version's notice reached, why the others were not, and what it said."""
    version = request.path_params["version"]
    rt = context(request).runtime

    def run() -> dict[str, Any]:
        report = policy.coverage(rt, version, actor=actor(request))
        with rt.sessions() as session:
            # the notice's launch snapshot: template, version, subject, content hash
            notice = template_store.snapshot_of(session, report.campaign_id)
        return {**report.as_dict(), "notice": notice}

    return JSONResponse(await run_in_threadpool(run))


@allow(Role.ADMIN)
@operation("policy", response={"type": "object"})
async def resend_version(request: Request) -> Response:
    """Queue a version's notice for eligible contacts not yet sent it, never twice."""
    version = request.path_params["version"]
    ctx = context(request)
    report = await run_in_threadpool(
        lambda: policy.resend_notice(
            ctx.runtime, version, actor=actor(request), dispatch=ctx.dispatch
        )
    )
    return JSONResponse({"campaign_id": report.campaign_id, "queued": report.queued})


@allow(Role.ADMIN)
@operation(
    "audit",
    query=[
        *PAGE_QUERY,
        Param("actor", {"type": "string", "maxLength": 100}),
        Param(
            "action",
            {"type": "string", "maxLength": 100},
            "exact, or a family: 'campaign.' or 'campaign.*'",
        ),
        Param("object_type", {"type": "string", "maxLength": 50}),
        Param("object_id", {"type": "string", "maxLength": 100}),
        Param("since", {"type": "string", "maxLength": 40}, "ISO time with zone"),
        Param("until", {"type": "string", "maxLength": 40}, "ISO time with zone"),
    ],
    response={
        "type": "object",
        "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
    },
)
async def audit_events(request: Request) -> Response:
    """Audit events, newest first, filtered (keyset pagination)."""
    q = read_query(request)
    times = {name: parse_time(q[name], name) for name in ("since", "until") if q[name]}
    where = audit.AuditQuery(
        actor=q["actor"] or "",
        action=q["action"] or "",
        object_type=q["object_type"] or "",
        object_id=q["object_id"] or "",
        since=times.get("since"),
        until=times.get("until"),
    )
    before = decode_cursor(q["cursor"])

    def run() -> tuple[list[dict[str, Any]], bool]:
        with context(request).runtime.sessions() as session:
            page = audit.query_events(
                session,
                actor(request),
                where,
                limit=q["limit"],
                cursor=audit.cursor_before(before) if before is not None else None,
            )
            return [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "ip": e.ip,
                    "action": e.action,
                    "object_type": e.object_type,
                    "object_id": e.object_id,
                    "details": e.details,
                }
                for e in page.items
            ], page.next_cursor is not None

    items, more = await run_in_threadpool(run)
    return JSONResponse(
        {"items": items, "next_cursor": encode_cursor(items[-1]["id"]) if more else None}
    )


USER = {
    "type": "object",
    "properties": {
        "username": {"type": "string"},
        "display_name": {"type": "string"},
        "email": {"type": "string"},
        "role": {"type": "string"},
        "is_active": {"type": "boolean"},
        "totp_enabled": {"type": "boolean"},
    },
}
TOKEN = {
    "type": "object",
    "properties": {
        "public_id": {"type": "string"},
        "name": {"type": "string"},
        "username": {"type": "string"},
        "created_by": {"type": "string"},
        "created_at": {"type": "string"},
        "expires_at": {"type": ["string", "null"]},
        "last_used_at": {"type": ["string", "null"]},
        "revoked_at": {"type": ["string", "null"]},
    },
}


def _user_json(u: Any) -> dict[str, Any]:
    return {k: getattr(u, k) for k in USER["properties"]}


def _token_json(t: Any) -> dict[str, Any]:
    def iso(v: dt.datetime | None) -> str | None:
        return v.isoformat() if v else None

    return {
        "public_id": t.public_id,
        "name": t.name,
        "username": t.username,
        "created_by": t.created_by,
        "created_at": t.created_at.isoformat(),
        "expires_at": iso(t.expires_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


@allow(Role.ADMIN)
@operation(
    "users",
    response={"type": "object", "properties": {"items": {"type": "array", "items": USER}}},
)
async def users(request: Request) -> Response:
    """Every user with role and status."""

    def run() -> list[dict[str, Any]]:
        with context(request).runtime.sessions() as session:
            return [_user_json(u) for u in access.list_user_infos(session, actor(request))]

    return JSONResponse({"items": await run_in_threadpool(run)})


@allow(Role.ADMIN)
@operation(
    "users",
    body={
        "type": "object",
        "required": ["username", "display_name", "email", "role", "password"],
        "properties": {
            "username": {"type": "string", "maxLength": 64},
            "display_name": {"type": "string", "maxLength": 200},
            "email": {"type": "string", "maxLength": 320},
            "role": {"type": "string", "enum": [r.value for r in Role]},
            "phone": {"type": "string", "maxLength": 40},
            "password": {"type": "string", "maxLength": 1000},
        },
    },
    response=USER,
    status=201,
)
async def add_user(request: Request) -> Response:
    """Add a user with a role and a first password."""
    body = await read_body(request)

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions.begin() as session:
            access.create_user(
                session,
                actor(request),
                username=body["username"],
                display_name=body["display_name"],
                email=body["email"],
                role=body["role"],
                phone=body.get("phone", ""),
                password=body["password"],
            )
            [info] = [
                u
                for u in access.list_user_infos(session, actor(request))
                if u.username == body["username"]
            ]
            return _user_json(info)

    return JSONResponse(await run_in_threadpool(run), status_code=201)


@allow(Role.ADMIN)
@operation(
    "users",
    body={
        "type": "object",
        "properties": {
            "role": {"type": "string", "enum": [r.value for r in Role]},
            "is_active": {"type": "boolean"},
            "password": {"type": "string", "maxLength": 1000},
        },
        "additionalProperties": False,
    },
    response=USER,
)
async def change_user(request: Request) -> Response:
    """Change a user's role, disable or enable them, or set a new password."""
    body = await read_body(request)
    username = request.path_params["username"]
    who = actor(request)

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions.begin() as session:
            if "role" in body:
                access.set_role(session, who, username, body["role"])
            if body.get("is_active") is False:
                access.disable_user(session, who, username)
            elif body.get("is_active") is True:
                access.enable_user(session, who, username)
            if "password" in body:
                access.set_password(session, who, username, body["password"])
            found = [u for u in access.list_user_infos(session, who) if u.username == username]
            if not found:
                raise NotFoundError(f"no user {username!r}")
            return _user_json(found[0])

    return JSONResponse(await run_in_threadpool(run))


@allow(Role.ADMIN)
@operation(
    "tokens",
    query=[Param("username", {"type": "string", "maxLength": 64})],
    response={"type": "object", "properties": {"items": {"type": "array", "items": TOKEN}}},
)
async def tokens(request: Request) -> Response:
    """Active API tokens, newest first (never their secrets)."""
    q = read_query(request)

    def run() -> list[dict[str, Any]]:
        with context(request).runtime.sessions() as session:
            found = access.list_tokens(session, actor(request), username=q["username"] or None)
            return [_token_json(t) for t in found]

    return JSONResponse({"items": await run_in_threadpool(run)})


@allow(Role.ADMIN)
@operation(
    "tokens",
    body={
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 100},
            "username": {"type": "string", "maxLength": 64},
            "expires_in_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 3650},
        },
    },
    response={"type": "object", "properties": {"token": {"type": "string"}, "info": TOKEN}},
    status=201,
)
async def create_token(request: Request) -> Response:
    """Create a token acting as a user; the secret is in this answer only."""
    body = await read_body(request)

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions.begin() as session:
            created = access.create_api_token(
                session,
                actor(request),
                name=body["name"],
                username=body.get("username"),
                expires_in_days=body.get("expires_in_days", 90),
            )
            return {"token": created.token, "info": _token_json(created.info)}

    return JSONResponse(await run_in_threadpool(run), status_code=201)


@allow(Role.ADMIN)
@operation("tokens", response=TOKEN)
async def revoke_token(request: Request) -> Response:
    """Revoke a token at once."""
    public_id = request.path_params["public_id"]

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions.begin() as session:
            return _token_json(access.revoke_token(session, actor(request), public_id))

    return JSONResponse(await run_in_threadpool(run))


ROUTES: list[BaseRoute] = [
    Route("/contacts", search_contacts, methods=["GET"]),
    Route("/contacts/import", import_csv, methods=["POST"]),
    Route("/contacts/{contact_id:id}", get_contact, methods=["GET"]),
    Route("/contacts/{contact_id:id}/opt-out", opt_out, methods=["POST"]),
    Route("/contacts/{contact_id:id}/suppress", suppress, methods=["POST"]),
    Route("/contacts/{contact_id:id}/unsuppress", unsuppress, methods=["POST"]),
    Route("/policy/versions", list_versions, methods=["GET"]),
    Route("/policy/versions", publish_version, methods=["POST"]),
    Route("/policy/versions/{version}/coverage", version_coverage, methods=["GET"]),
    Route("/policy/versions/{version}/resend", resend_version, methods=["POST"]),
    Route("/audit/events", audit_events, methods=["GET"]),
    Route("/users", users, methods=["GET"]),
    Route("/users", add_user, methods=["POST"]),
    Route("/users/{username}", change_user, methods=["PATCH"]),
    Route("/tokens", tokens, methods=["GET"]),
    Route("/tokens", create_token, methods=["POST"]),
    Route("/tokens/{public_id}/revoke", revoke_token, methods=["POST"]),
]
