"""API: templates — the built-in and stored ones a caller may send, a stored template with every
version, and saving a new version (checked like `mailer template check`; a failing save saves
nothing and answers 422 with each problem's field, line and column)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailer import template_store
from mailer.enums import Role
from mailer.errors import TemplateError
from mailer.web.context import actor, context
from mailer.web.guard import allow
from mailer.web.openapi import operation, read_body
from mailer.web.problems import InvalidInput

SENDERS = (Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
EDITORS = (Role.ADMIN, Role.MARKETING)

CHOICE = {
    "type": "object",
    "required": ["name", "kind", "category", "subject"],
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string", "description": "built-in, or stored vN (its latest version)"},
        "category": {"type": "string"},
        "subject": {"type": "string"},
        "error": {"type": "string"},
    },
}
VERSION = {
    "type": "object",
    "required": ["id", "template", "version", "subject", "html", "content_hash"],
    "properties": {
        "id": {"type": "integer"},
        "template": {"type": "string"},
        "version": {"type": "integer"},
        "subject": {"type": "string"},
        "params": {"type": "array", "items": {"type": "string"}},
        "html": {"type": "string"},
        "text": {"type": ["string", "null"]},
        "note": {"type": "string"},
        "author": {"type": "string"},
        "created_at": {"type": "string"},
        "content_hash": {"type": "string"},
    },
}
STORED = {
    "type": "object",
    "required": ["name", "category", "versions"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "category": {"type": "string"},
        "created_by": {"type": "string"},
        "created_at": {"type": "string"},
        "latest": {"type": ["object", "null"]},
        "versions": {"type": "array", "items": VERSION},
    },
}
SAVE = {
    "type": "object",
    "required": ["subject", "html"],
    "additionalProperties": False,
    "properties": {
        "subject": {"type": "string", "maxLength": 300},
        "html": {"type": "string", "maxLength": template_store.MAX_SOURCE_CHARS},
        "text": {
            "type": ["string", "null"],
            "maxLength": template_store.MAX_SOURCE_CHARS,
            "description": "the text part; null or empty: derived from the HTML",
        },
        "params": {
            "type": "string",
            "maxLength": 400,
            "description": "campaign parameters it reads, comma-separated",
        },
        "note": {"type": "string", "maxLength": 500, "description": "what changed"},
        "base_version": {
            "type": "integer",
            "minimum": 0,
            "description": "the version edited: refused (422) if a newer one was saved since",
        },
    },
}


def _name(request: Request) -> str:
    return f"{request.path_params['category']}/{request.path_params['name']}"


@allow(*SENDERS)
@operation(
    "templates",
    response={"type": "object", "properties": {"items": {"type": "array", "items": CHOICE}}},
)
async def list_templates(request: Request) -> Response:
    """Built-in and stored templates the caller may send, with category and subject."""

    def run() -> list[dict[str, str]]:
        rt = context(request).runtime
        with rt.sessions() as session:
            return template_store.template_choices(session, rt.settings, actor(request))

    return JSONResponse({"items": await run_in_threadpool(run)})


@allow(*SENDERS)
@operation("templates", response=STORED)
async def get_stored(request: Request) -> Response:
    """A stored template with every version (sources included), newest first."""
    name = _name(request)

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions() as session:
            info, versions = template_store.get_stored(session, actor(request), name)
        return {**info.as_dict(), "versions": [v.as_dict() for v in versions]}

    return JSONResponse(await run_in_threadpool(run))


@allow(*EDITORS)
@operation("templates", body=SAVE, response=VERSION, status=201)
async def save_version(request: Request) -> Response:
    """Save a new version of a stored template (the first save creates it)."""
    body = await read_body(request)
    name = _name(request)
    try:
        saved = await run_in_threadpool(
            lambda: template_store.save_version(
                context(request).runtime,
                actor(request),
                name=name,
                subject=body["subject"],
                html=body["html"],
                text=body.get("text"),
                params=body.get("params", ""),
                note=body.get("note", ""),
                base_version=body.get("base_version"),
            )
        )
    except TemplateError as exc:
        raise InvalidInput(template_store.error_fields(exc)) from exc
    return JSONResponse(saved.as_dict(), status_code=201)
