"""Template screens: the built-in and stored templates, a stored template's versions (each
viewable, with its changes from the one before) and the editor, where every save is a new
version checked like `mailer template check`; a failing save saves nothing and shows each
problem with its line and column beside the field."""

from __future__ import annotations

import difflib
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer import template_store
from mailer.enums import Category, Role
from mailer.errors import NotFoundError, TemplateError
from mailer.models import parse_id
from mailer.web.admin.pages import checked_form, done, field, render
from mailer.web.context import actor, context
from mailer.web.guard import allow

SENDERS = (Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
EDITORS = (Role.ADMIN, Role.MARKETING)
_FORM_FIELDS = ("name", "subject", "params", "html", "text", "note", "base_version")


def _name(request: Request) -> str:
    return f"{request.path_params['category']}/{request.path_params['name']}"


@allow(*SENDERS)
async def template_list(request: Request) -> Response:
    """Built-in and stored templates of the categories the user may send."""

    def run() -> list[dict[str, str]]:
        rt = context(request).runtime
        with rt.sessions() as session:
            return template_store.template_choices(session, rt.settings, actor(request))

    choices = await run_in_threadpool(run)
    who = actor(request)
    return render(
        request,
        "templates.html",
        templates=choices,
        may_create=any(template_store.may_edit(who, c) for c in Category),
        editable=[c.value for c in Category if template_store.may_edit(who, c)],
    )


@allow(*SENDERS)
async def template_page(request: Request) -> Response:
    """A stored template: its versions, one of them shown, and what changed from the one before."""
    name = _name(request)
    asked = request.query_params.get("version", "")

    def run() -> tuple[Any, list[Any]]:
        with context(request).runtime.sessions() as session:
            return template_store.get_stored(session, actor(request), name)

    info, versions = await run_in_threadpool(run)
    if not versions:
        raise NotFoundError(f"{name} has no saved version yet")
    shown = versions[0]
    if asked:
        matching = [v for v in versions if str(v.number) == asked]
        if not matching:
            raise NotFoundError(
                f"{name} has no version {asked!r}; its versions are 1 to {versions[0].number}"
            )
        shown = matching[0]
    previous = next((v for v in versions if v.number == shown.number - 1), None)
    return render(
        request,
        "template.html",
        info=info,
        versions=versions,
        shown=shown,
        previous=previous,
        diff=_diff(previous, shown) if previous else "",
        may_edit=template_store.may_edit(actor(request), info.category),
    )


def _diff(old: Any, new: Any) -> str:
    def lines(v: Any) -> list[str]:
        out = [f"subject: {v.subject}", f"params: {', '.join(v.params)}", "--- HTML ---"]
        out += v.html.splitlines()
        out += ["--- text ---", *(v.text.splitlines() if v.text else ["(derived from the HTML)"])]
        return out

    return "\n".join(
        difflib.unified_diff(
            lines(old), lines(new), f"version {old.number}", f"version {new.number}", lineterm=""
        )
    )


@allow(*EDITORS)
async def new_template(request: Request) -> Response:
    """The editor for a new stored template, empty or (`?from=NAME`) a copy of a built-in one."""
    who = actor(request)
    category = next(c for c in Category if template_store.may_edit(who, c))
    values = dict.fromkeys(_FORM_FIELDS, "")
    values["name"] = f"{category.value}/"
    copied = request.query_params.get("from", "")
    if copied:

        def run() -> dict[str, str]:
            rt = context(request).runtime
            with rt.sessions() as session:
                return template_store.builtin_copy(session, rt.settings, who, copied)

        values.update(await run_in_threadpool(run))
    return _editor(request, values=values, errors=[], is_new=True)


@allow(*EDITORS)
async def edit_template(request: Request) -> Response:
    """The editor for a new version of a stored template, starting from its latest."""
    name = _name(request)

    def run() -> tuple[Any, list[Any]]:
        with context(request).runtime.sessions() as session:
            who = actor(request)
            found = template_store.get_stored(session, who, name)
            template_store.require_template_right(session, who, "edit", found[0].category, name)
            return found

    _, versions = await run_in_threadpool(run)
    latest = versions[0] if versions else None
    values = {
        "name": name,
        "subject": latest.subject if latest else "",
        "params": ", ".join(latest.params) if latest else "",
        "html": latest.html if latest else "",
        "text": (latest.text or "") if latest else "",
        "note": "",
        "base_version": str(latest.number) if latest else "",
    }
    return _editor(request, values=values, errors=[], is_new=False)


@allow(*EDITORS)
async def save(request: Request) -> Response:
    """Save a new version (the first one creates the template); nothing is saved on a problem."""
    form = await checked_form(request)
    values = {k: field(form, k) for k in ("name", "subject", "params", "note", "base_version")}
    values["html"] = str(form.get("html", ""))
    values["text"] = str(form.get("text", ""))
    base = values["base_version"]
    is_new = not base

    def run() -> Any:
        return template_store.save_version(
            context(request).runtime,
            actor(request),
            name=values["name"],
            subject=values["subject"],
            html=values["html"],
            text=values["text"],
            params=values["params"],
            note=values["note"],
            base_version=parse_id(base) or 0,  # the new-template form: 0
        )

    try:
        saved = await run_in_threadpool(run)
    except TemplateError as exc:
        errors = template_store.error_fields(exc)
        return _editor(request, values=values, errors=errors, is_new=is_new)
    return done(request, f"/admin/templates/{saved.template}?notice=saved&version={saved.number}")


def _editor(
    request: Request, *, values: dict[str, str], errors: list[dict[str, Any]], is_new: bool
) -> Response:
    by_field: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        by_field.setdefault(str(error["field"]), []).append(error)
    return render(
        request,
        "template_edit.html",
        status_code=422 if errors else 200,
        values=values,
        errors=errors,
        by_field=by_field,
        is_new=is_new,
        categories=[c.value for c in Category if template_store.may_edit(actor(request), c)],
    )


ROUTES: list[BaseRoute] = [
    Route("/templates", template_list, methods=["GET"]),
    Route("/templates/new", new_template, methods=["GET"]),
    Route("/templates", save, methods=["POST"]),
    Route("/templates/{category}/{name}", template_page, methods=["GET"]),
    Route("/templates/{category}/{name}/edit", edit_template, methods=["GET"]),
]
