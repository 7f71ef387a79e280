"""Which template a campaign is made from, the version it pins at launch, and the snapshot.

A campaign names its template as `category/name`. A built-in file template leaves
`template_id` empty; a stored one sets it, and launch pins the stored template's latest
version in `template_version_id`, in the launch transaction. From then on everything that
renders the campaign (workers, previews, the report) uses that version, even after newer ones
are saved. Launch also writes the campaign's `CampaignSnapshot`: the subject, the sources and
one message rendered for the documented sample contact with the campaign's real sender and
parameters — what a coverage report shows as proof of what a notice said.
"""

from __future__ import annotations

import difflib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import TemplateError
from mailer.messages import CampaignInfo, CampaignMessages, SenderIdentity, Template
from mailer.messages.check import check_source_template
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.messages.templates import (
    TemplateSource,
    compile_template,
    layout_sources,
    list_templates,
    read_template_source,
)
from mailer.models import Campaign, CampaignSnapshot, StoredTemplate, utcnow
from mailer.template_store.store import (
    StoredSource,
    cached_version_source,
    content_hash,
    find_stored,
    full_name,
    is_builtin,
    latest_version,
)


@dataclass(frozen=True)
class ChosenSource:
    """A template's source and, for a stored one, the template and version it came from."""

    source: TemplateSource
    template_id: int | None = None
    version_id: int | None = None
    version_number: int | None = None


def choose_source(session: Session | None, settings: Settings, name: str) -> ChosenSource:
    """The template called `name` as a campaign would use it now: a built-in file template,
    else the latest version of the stored template of that name."""
    if is_builtin(settings, name):
        return ChosenSource(read_template_source(settings, name))
    stored = find_stored(session, name) if session is not None and "/" in name else None
    if session is None or stored is None:
        raise _no_such_template(session, settings, name)
    return _latest(session, stored.id)


def _latest(session: Session, template_id: int) -> ChosenSource:
    version = latest_version(session, template_id)
    return _from_stored(cached_version_source(session, version.id))


def _from_stored(found: StoredSource) -> ChosenSource:
    return ChosenSource(found.source, found.template_id, found.version_id, found.number)


def check_chosen(settings: Settings, chosen: ChosenSource, *, subject: str = "") -> Template:
    """The static check and sample render of `mailer template check`, with the campaign's
    own subject when it has one."""
    return check_source_template(settings, chosen.source, subject=subject)


def campaign_source(session: Session, settings: Settings, campaign: Campaign) -> ChosenSource:
    """The source a campaign renders from: its pinned version once launched (a relaunch
    keeps it), else what launch would pin now (its stored template's latest version)."""
    if campaign.template_version_id is not None:
        return _from_stored(cached_version_source(session, campaign.template_version_id))
    if campaign.template_id is not None:
        return _latest(session, campaign.template_id)
    return choose_source(session, settings, campaign.template)


def campaign_template(session: Session, settings: Settings, campaign: Campaign) -> Template:
    """The campaign's compiled template (pinned version, own subject), for workers and previews.

    A pinned version's source is read once per process, and compiled once per process
    (`compiled_template`), as a built-in file is."""
    chosen = campaign_source(session, settings, campaign)
    return compiled_template(settings, chosen.source, subject=campaign.subject or "")


#: How many compiled templates a process keeps (as many campaigns as a worker thread keeps).
_COMPILED_CACHE_SIZE = 8
#: By everything compiling reads: the templates directory, the source (a pinned version's
#: content, or a built-in file's as read now), the campaign's own subject and the layout.
_compiled: OrderedDict[tuple[object, ...], Template] = OrderedDict()
_compiled_lock = threading.Lock()


def compiled_template(settings: Settings, source: TemplateSource, *, subject: str = "") -> Template:
    """`compile_template`, once per process for the same source, subject and layout.

    Every worker thread sending a campaign shares one compiled template (compiling the
    policy notice takes ~25 ms of CPU, more than the rest of a first batch), and a worker
    compiles the notice at start (`mailer.policy.prepare_notice`). A newly pinned version,
    an edited built-in file or layout is a different key, so it is compiled anew; the lock
    makes threads that miss together wait for one compilation instead of each doing it.
    """
    key = (str(settings.templates_dir), source, subject, layout_sources(settings))
    with _compiled_lock:
        found = _compiled.get(key)
        if found is not None:
            _compiled.move_to_end(key)
            return found
        template = compile_template(settings, source, subject=subject)
        _compiled[key] = template
        while len(_compiled) > _COMPILED_CACHE_SIZE:
            _compiled.popitem(last=False)
        return template


def pin_and_snapshot(
    session: Session,
    settings: Settings,
    campaign: Campaign,
    chosen: ChosenSource,
    template: Template,
    sender: SenderIdentity,
) -> CampaignSnapshot:
    """Pin the stored version (if any) on `campaign` and write its snapshot, in the caller's
    (launch) transaction; a relaunch (missed, failed) replaces the earlier snapshot."""
    campaign.template_id = chosen.template_id
    campaign.template_version_id = chosen.version_id
    messages = CampaignMessages(
        settings.with_(dkim_private_key_path=""),
        template=template,
        campaign=CampaignInfo(
            id=campaign.id, name=campaign.name, category=Category(campaign.category)
        ),
        sender=sender,
        params=_with_samples(template, dict(campaign.params or {})),
    )
    subject, text, html = messages.render_parts(SAMPLE_RECIPIENT)
    source = chosen.source
    values: dict[str, Any] = {
        "template": campaign.template,
        "template_version_id": chosen.version_id,
        "template_version": chosen.version_number,
        "subject_source": template.subject_source,
        "html_source": source.html,
        "text_source": source.text,
        "content_hash": content_hash(
            template.subject_source, source.params, source.html, source.text
        ),
        "sample_email": SAMPLE_RECIPIENT.email,
        "sample_subject": subject,
        "sample_text": text,
        "sample_html": html,
        "created_at": utcnow(),
    }
    snapshot = session.get(CampaignSnapshot, campaign.id)
    if snapshot is None:
        snapshot = CampaignSnapshot(campaign_id=campaign.id, **values)
        session.add(snapshot)
    else:
        for key, value in values.items():
            setattr(snapshot, key, value)
    return snapshot


def get_snapshot(session: Session, campaign_id: int) -> CampaignSnapshot | None:
    return session.get(CampaignSnapshot, campaign_id)


def version_label(snapshot: CampaignSnapshot | None) -> str:
    """`v3` for a stored version, `built-in` for a file template, "" before launch."""
    if snapshot is None:
        return ""
    return f"v{snapshot.template_version}" if snapshot.template_version else "built-in"


def snapshot_of(session: Session, campaign_id: int | None) -> dict[str, Any] | None:
    """The summary of campaign `campaign_id`'s snapshot, or None (not launched, or no id)."""
    if campaign_id is None:
        return None
    return snapshot_summary(get_snapshot(session, campaign_id))


def snapshot_summary(snapshot: CampaignSnapshot | None) -> dict[str, Any] | None:
    """What reports and exports say of a campaign's snapshot (the sources stay in the row)."""
    if snapshot is None:
        return None
    return {
        "template": snapshot.template,
        "template_version": snapshot.template_version,
        "template_version_label": version_label(snapshot),
        "content_hash": snapshot.content_hash,
        "subject_source": snapshot.subject_source,
        "sample_subject": snapshot.sample_subject,
        "sample_email": snapshot.sample_email,
        "created_at": snapshot.created_at.isoformat(),
    }


def _with_samples(template: Template, params: dict[str, Any]) -> dict[str, Any]:
    # a launched campaign gives every declared parameter; a policy notice its version's
    return {**{name: f"[{name}]" for name in template.params}, **params}


def _no_such_template(session: Session | None, settings: Settings, name: str) -> TemplateError:
    known = list_templates(settings)
    if session is not None:
        known += [full_name(s) for s in session.scalars(select(StoredTemplate))]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "`mailer template list` shows what exists"
    return TemplateError(
        str(Path(settings.templates_dir) / f"{name}.html"), f"no such template {name!r}; {hint}"
    )
