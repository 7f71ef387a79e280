"""Reading stored templates: what a user may list and open, the campaign editor's choices,
and a failed save's problems as form fields."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.access import Actor
from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import NotFoundError, TemplateCheckError, TemplateError
from mailer.messages.templates import HEADER, list_templates, read_template_source
from mailer.models import StoredTemplate, TemplateVersion
from mailer.template_store.rights import may_see, require_template_right
from mailer.template_store.store import (
    VersionInfo,
    find_stored,
    full_name,
    split_name,
    version_info,
)


@dataclass(frozen=True)
class StoredInfo:
    """A stored template and its latest version."""

    id: int
    name: str
    category: Category
    created_by: str
    created_at: str
    latest: VersionInfo | None

    def as_dict(self, *, sources: bool = False) -> dict[str, object]:
        latest = self.latest.as_dict() if self.latest else None
        if latest and not sources:
            latest = {k: v for k, v in latest.items() if k not in ("html", "text")}
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category.value,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "latest": latest,
        }


def list_stored(session: Session, actor: Actor) -> list[StoredInfo]:
    """Stored templates of the categories the actor may send, with their latest versions."""
    newest = (
        select(TemplateVersion.template_id, func.max(TemplateVersion.number).label("number"))
        .group_by(TemplateVersion.template_id)
        .subquery()
    )
    rows = session.execute(
        select(StoredTemplate, TemplateVersion)
        .outerjoin(newest, newest.c.template_id == StoredTemplate.id)
        .outerjoin(
            TemplateVersion,
            (TemplateVersion.template_id == StoredTemplate.id)
            & (TemplateVersion.number == newest.c.number),
        )
        .order_by(StoredTemplate.category, StoredTemplate.name)
    ).all()
    return [
        _stored_info(stored, version)
        for stored, version in rows
        if may_see(actor, Category(stored.category))
    ]


def get_stored(session: Session, actor: Actor, name: str) -> tuple[StoredInfo, list[VersionInfo]]:
    """A stored template and all its versions, newest first; audited refusal if not the
    actor's category, NotFoundError (with did-you-mean) if there is none."""
    category, _ = split_name(name)
    stored = find_stored(session, name)
    if stored is None:
        known = [full_name(s) for s in session.scalars(select(StoredTemplate))]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise NotFoundError(f"no stored template {name!r}{hint}")
    require_template_right(session, actor, "view", category, name)
    versions = session.scalars(
        select(TemplateVersion)
        .where(TemplateVersion.template_id == stored.id)
        .order_by(TemplateVersion.number.desc())
    ).all()
    infos = [version_info(v, name) for v in versions]
    return _stored_info(stored, versions[0] if versions else None), infos


def get_version(session: Session, actor: Actor, name: str, number: int) -> VersionInfo:
    """Version `number` of stored template `name`."""
    _, versions = get_stored(session, actor, name)
    for version in versions:
        if version.number == number:
            return version
    newest = versions[0].number if versions else 0
    raise NotFoundError(f"{name} has no version {number}; its versions are 1 to {newest}")


def template_choices(session: Session, settings: Settings, actor: Actor) -> list[dict[str, str]]:
    """What a campaign may be made from, for the actor: built-in and stored templates with
    category and subject (a built-in that fails to load is listed with its error)."""
    out: list[dict[str, str]] = []
    for name in list_templates(settings):
        try:
            source = read_template_source(settings, name)
        except TemplateError as exc:
            out.append(
                {"name": name, "kind": "built-in", "category": "", "subject": "", "error": str(exc)}
            )
            continue
        if may_see(actor, source.category):
            out.append(
                {
                    "name": name,
                    "kind": "built-in",
                    "category": source.category.value,
                    "subject": source.subject,
                }
            )
    for info in list_stored(session, actor):
        if info.latest is not None:
            out.append(
                {
                    "name": info.name,
                    "kind": f"stored v{info.latest.number}",
                    "category": info.category.value,
                    "subject": info.latest.subject,
                }
            )
    return out


def _stored_info(stored: StoredTemplate, latest: TemplateVersion | None) -> StoredInfo:
    name = full_name(stored)
    return StoredInfo(
        id=stored.id,
        name=name,
        category=Category(stored.category),
        created_by=stored.created_by,
        created_at=stored.created_at.isoformat(),
        latest=version_info(latest, name) if latest is not None else None,
    )


#: The form field each kind of problem belongs to, by the end of the place it names.
_FIELD_OF = ((".subject", "subject"), ("campaign subject", "subject"), (".txt", "text"))


def error_fields(exc: TemplateError) -> list[dict[str, object]]:
    """Each problem of a failed save as {field, message, line, column}, for forms and the API:
    the field is name, params, subject, html or text."""
    problems = exc.problems if isinstance(exc, TemplateCheckError) else [exc]
    out: list[dict[str, object]] = []
    for problem in problems:
        field = problem.template if problem.template in ("name", "params") else "html"
        for suffix, name in _FIELD_OF:
            if problem.template.endswith(suffix):
                field = name
        if " in the subject: " in problem.message:  # the content rules name the subject
            field = "subject"
        item: dict[str, object] = {"field": field, "message": problem.message}
        if problem.line:
            item["line"] = problem.line
        if problem.column:
            item["column"] = problem.column
        out.append(item)
    return out


def builtin_copy(session: Session, settings: Settings, actor: Actor, name: str) -> dict[str, str]:
    """The editor's fields for a new stored template copied from built-in `name` (its
    header's subject and parameters, its content and text), named `<name>-copy`."""
    if name not in list_templates(settings):
        raise NotFoundError(f"no built-in template {name!r}; the Templates page lists them")
    source = read_template_source(settings, name)
    require_template_right(session, actor, "edit", source.category, name)
    found = HEADER.match(source.html)
    body = source.html[found.end() :].lstrip("\n") if found else source.html
    return {
        "name": f"{name}-copy",
        "subject": source.subject,
        "params": ", ".join(source.params),
        "html": body,
        "text": source.text or "",
    }
