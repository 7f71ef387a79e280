"""Templates kept in the database: every save is a new, immutable version.

A stored template is named `category/name` like a built-in file template (and may not take a
built-in's name). Its versions hold the subject, the declared campaign parameters, the HTML
content and, if written, the text part. `save_version` checks a version with the same static
check and sample render as `mailer template check` before anything is written: a failing save
saves nothing and raises TemplateCheckError listing every problem.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.access import Actor, audit
from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import NotFoundError, TemplateCheckError, TemplateError
from mailer.messages.check import check_source_template
from mailer.messages.templates import (
    TemplateSource,
    declared_params,
    list_templates,
)
from mailer.models import StoredTemplate, TemplateVersion, utcnow
from mailer.runtime import Runtime
from mailer.template_store.rights import require_template_right

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
#: Largest HTML or text source a version may have, in characters.
MAX_SOURCE_CHARS = 200_000
#: How many stored versions' sources a process keeps (versions never change, so no expiry).
_SOURCE_CACHE_SIZE = 64


@dataclass(frozen=True)
class VersionInfo:
    """One version of a stored template, as lists and pages show it."""

    id: int
    template: str
    number: int
    subject: str
    params: tuple[str, ...]
    html: str
    text: str | None
    note: str
    author: str
    created_at: str
    content_hash: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "template": self.template,
            "version": self.number,
            "subject": self.subject,
            "params": list(self.params),
            "html": self.html,
            "text": self.text,
            "note": self.note,
            "author": self.author,
            "created_at": self.created_at,
            "content_hash": self.content_hash,
        }


def split_name(name: str) -> tuple[Category, str]:
    """`category/name` → (category, name); TemplateError (on `name`) says what a name is."""
    category_text, sep, slug = name.strip().partition("/")
    try:
        category = Category(category_text)
    except ValueError:
        choices = ", ".join(f"{c.value}/…" for c in Category)
        raise TemplateError(
            "name", f"{name!r} does not start with a category; name it {choices}"
        ) from None
    if not sep or not _SLUG.fullmatch(slug):
        raise TemplateError(
            "name",
            f"{slug!r} is not a template name: use lower-case letters, digits and dashes "
            f"(e.g. {category.value}/spring-webinar), at most 80",
        )
    return category, slug


def content_hash(subject: str, params: tuple[str, ...], html: str, text: str | None) -> str:
    parts = [subject, ",".join(params), html, "\x00" if text is None else text]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def version_source(version: TemplateVersion, name: str, category: Category) -> TemplateSource:
    """A stored version as a source to compile; errors point at `name vN.html` and so on."""
    label = f"{name} v{version.number}"
    return TemplateSource(
        name=name,
        category=category,
        subject=version.subject,
        html=version.html,
        text=version.text,
        params=_params_tuple(version.params),
        html_file=f"{label}.html",
        text_file=f"{label}.txt",
        subject_file=f"{label}.subject",
    )


@dataclass(frozen=True)
class StoredSource:
    """A stored version's source and where it comes from."""

    source: TemplateSource
    template_id: int
    version_id: int
    number: int


#: By (database URL, version id): a process normally has one database, tests have many.
_sources: OrderedDict[tuple[str, int], StoredSource] = OrderedDict()
_sources_lock = threading.Lock()


def cached_version_source(session: Session, version_id: int) -> StoredSource:
    """The source of stored version `version_id`, read once per process (versions are
    immutable, so a worker never reads one twice)."""
    key = (str(session.get_bind().engine.url), version_id)
    with _sources_lock:
        found = _sources.get(key)
        if found is not None:
            _sources.move_to_end(key)
            return found
    row = session.execute(
        select(TemplateVersion, StoredTemplate)
        .join(StoredTemplate, StoredTemplate.id == TemplateVersion.template_id)
        .where(TemplateVersion.id == version_id)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"no stored template version {version_id}")
    version, stored = row
    found = StoredSource(
        version_source(version, full_name(stored), Category(stored.category)),
        stored.id,
        version.id,
        version.number,
    )
    with _sources_lock:
        _sources[key] = found
        while len(_sources) > _SOURCE_CACHE_SIZE:
            _sources.popitem(last=False)
    return found


def full_name(stored: StoredTemplate) -> str:
    return f"{stored.category}/{stored.name}"


def find_stored(session: Session, name: str) -> StoredTemplate | None:
    """The stored template called `name` (`category/name`), if there is one."""
    category, _, slug = name.partition("/")
    return session.scalar(
        select(StoredTemplate).where(
            StoredTemplate.category == category, StoredTemplate.name == slug
        )
    )


def latest_version(session: Session, template_id: int) -> TemplateVersion:
    version = session.scalar(
        select(TemplateVersion)
        .where(TemplateVersion.template_id == template_id)
        .order_by(TemplateVersion.number.desc())
        .limit(1)
    )
    if version is None:
        raise NotFoundError(f"stored template {template_id} has no version yet")
    return version


def save_version(
    rt: Runtime,
    actor: Actor,
    *,
    name: str,
    subject: str,
    html: str,
    text: str | None = None,
    params: str = "",
    note: str = "",
    base_version: int | None = None,
) -> VersionInfo:
    """Check and store a new version of `name`, creating the template at its first save.

    `base_version` is the version the editor started from (0: a new template): if someone
    saved a newer one meanwhile, the save is refused rather than silently overwrite their
    change. A version
    equal to the latest is refused too (nothing to save). Audited as `template.save`.
    """
    category, slug = split_name(name)
    name = f"{category.value}/{slug}"
    text = text if text is not None and text.strip() else None
    with rt.sessions.begin() as session:
        require_template_right(session, actor, "edit", category, name)
    source, declared = _checked_source(rt.settings, name, category, subject, html, text, params)
    digest = content_hash(source.subject, declared, source.html, source.text)
    try:
        with rt.sessions.begin() as session:
            stored = find_stored(session, name)
            if stored is None:
                stored = StoredTemplate(
                    category=category.value, name=slug, created_by=actor.username
                )
                session.add(stored)
                session.flush()
                latest = None
            else:
                latest = session.scalar(
                    select(TemplateVersion)
                    .where(TemplateVersion.template_id == stored.id)
                    .order_by(TemplateVersion.number.desc())
                    .limit(1)
                )
            _refuse_stale(name, latest, base_version, digest)
            version = TemplateVersion(
                template_id=stored.id,
                number=(latest.number if latest else 0) + 1,
                subject=source.subject,
                params=", ".join(declared),
                html=source.html,
                text=source.text,
                note=note.strip()[:500],
                author=actor.username,
                created_at=utcnow(),
                content_hash=digest,
            )
            session.add(version)
            session.flush()
            audit(
                session,
                actor,
                "template.save",
                object_type="template",
                object_id=name,
                version=version.number,
                version_id=version.id,
                content_hash=digest,
                note=version.note,
            )
            return version_info(version, name)
    except IntegrityError as exc:
        raise TemplateError(
            name, "someone saved this template at the same moment; reload it and save again"
        ) from exc


def _checked_source(
    settings: Settings,
    name: str,
    category: Category,
    subject: str,
    html: str,
    text: str | None,
    params: str,
) -> tuple[TemplateSource, tuple[str, ...]]:
    """The version's source after the static check and sample render of `template check`."""
    problems: list[TemplateError] = []
    if is_builtin(settings, name):
        problems.append(
            TemplateError(
                "name",
                f"{name} is a built-in template (templates/{name}.html); pick another name, "
                "or copy it under a new one",
            )
        )
    if not subject.strip():
        problems.append(TemplateError(f"{name}.subject", "give the template a subject", 1))
    if not html.strip():
        problems.append(TemplateError(f"{name}.html", "the HTML content is empty", 1))
    for part, value in (("html", html), ("txt", text or "")):
        if len(value) > MAX_SOURCE_CHARS:
            problems.append(
                TemplateError(
                    f"{name}.{part}",
                    f"{len(value):,} characters; a template holds at most {MAX_SOURCE_CHARS:,}",
                )
            )
    try:
        declared = declared_params(params, "params", 1)
    except TemplateError as exc:
        problems.append(exc)
        declared = ()
    if problems:
        raise TemplateCheckError(problems)
    source = TemplateSource(
        name=name,
        category=category,
        subject=" ".join(subject.split()),
        html=html.replace("\r\n", "\n"),
        text=text.replace("\r\n", "\n") if text is not None else None,
        params=declared,
        html_file=f"{name}.html",
        text_file=f"{name}.txt",
        subject_file=f"{name}.subject",
    )
    check_source_template(settings, source)
    return source, declared


def _refuse_stale(
    name: str, latest: TemplateVersion | None, base_version: int | None, digest: str
) -> None:
    if latest is None:
        return
    if base_version == 0:
        raise TemplateError(
            "name",
            f"a template called {name} exists already (version {latest.number}); open it to "
            "save a new version, or pick another name",
        )
    if base_version is not None and base_version != latest.number:
        raise TemplateError(
            name,
            f"version {latest.number} was saved by {latest.author} after the version "
            f"{base_version} you edited; open the template again to see their change, then save",
        )
    if latest.content_hash == digest:
        raise TemplateError(
            name, f"nothing changed since version {latest.number}; edit something, then save"
        )


def is_builtin(settings: Settings, name: str) -> bool:
    """Whether `name` is one of the built-in file templates under `templates/`."""
    # by the list, not the path: a name like `promotions/../x` never reaches the file system
    return name in list_templates(settings)


def _params_tuple(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def version_info(version: TemplateVersion, name: str) -> VersionInfo:
    return VersionInfo(
        id=version.id,
        template=name,
        number=version.number,
        subject=version.subject,
        params=_params_tuple(version.params),
        html=version.html,
        text=version.text,
        note=version.note,
        author=version.author,
        created_at=version.created_at.isoformat(),
        content_hash=version.content_hash,
    )
