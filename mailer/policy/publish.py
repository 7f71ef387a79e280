"""Publishing privacy-policy versions and launching the mandatory notice to every client.

CPI's policy promises to notify clients by email when it changes how information is used or
disclosed. `publish_policy` stores a version and, when the change is material, creates and
launches the `policy` notice campaign in the same transaction: the version, the campaign and
the first chunk of its send log exist together or not at all, and the first notices go out at
once. The rest of the send log is planned right after, while they are sent (the launch path
every campaign takes, `mailer.campaigns.launch`); a publisher that dies before finishing leaves
the campaign marked half planned, and the sweep plans the rest. The campaign cannot complete,
coverage shows the clients not yet planned as pending, and a resend is refused, until the plan
is whole. The `policy` category guard picks the audience
(every contact of every client organization whose information is still held, active or
former, until retention purges it; `policy_grace_days`, when set, narrows that to agreements
active or ended within so many days); opt-outs never apply, suppressed addresses are skipped
and counted as undeliverable. The notice rides the priority queue with at-least-once delivery.

Coverage (`mailer.policy.coverage`) proves who was told; resending (`mailer.policy.resend`)
reaches eligible contacts not yet told, never twice.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.access import Actor, audit, require
from mailer.campaigns import (
    Launch,
    add_draft,
    begin_launch,
    campaign_status,
    summarize,
)
from mailer.config import Settings
from mailer.delivery.batches import Dispatch
from mailer.enums import Category
from mailer.errors import PolicyError
from mailer.models import Campaign, PolicyVersion, utcnow
from mailer.policy.text import ensure_first_version, get_version
from mailer.runtime import Runtime
from mailer.template_store import choose_source, compiled_template

NOTICE_TEMPLATE = "policy/privacy-policy-change"
#: Labels appear in URLs (`/privacy/V`) and file names: keep them plain.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
#: A summary-file line starting with one of these and a space lists one change.
BULLET_MARKS = "-*•"


@dataclass
class PublishReport:
    """What `publish_policy` stored and, for a material change, the notice it launched."""

    version: str
    effective_on: dt.date
    is_material: bool
    published_at: dt.datetime
    published_by: str
    campaign_id: int | None = None
    #: Sends by status once the whole plan is written (some may be sent by then).
    counts: dict[str, int] = field(default_factory=dict)
    #: Why planned contacts were skipped (suppressed: undeliverable; not_a_client …).
    skip_reasons: dict[str, int] = field(default_factory=dict)
    batches: int = 0


def prepare_notice(settings: Settings) -> None:
    """Compile the notice's template into this process's cache, as the first batch of a
    notice campaign would (`template_store.compiled_template`): each worker process does it
    at start, so the first notice after publishing does not wait for it (docs/performance.md
    §7). Raises TemplateError if the template does not compile."""
    compiled_template(settings, choose_source(None, settings, NOTICE_TEMPLATE).source)


def human_date(day: dt.date) -> str:
    """`January 1, 2027`: how the notice shows the effective date."""
    return f"{day:%B} {day.day}, {day.year}"


def split_summary(text: str) -> tuple[str, list[str]]:
    """A summary file's prose (one paragraph) and its bulleted lines (`- …`), each a change."""
    prose: list[str] = []
    changes: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped[:1] and stripped[0] in BULLET_MARKS and stripped[1:2] in ("", " ", "\t"):
            if stripped[1:].strip():  # a lone marker lists nothing
                changes.append(stripped[1:].strip())
        elif stripped:
            prose.append(stripped)
    return " ".join(prose), changes


def notice_params(settings: Settings, version: PolicyVersion) -> dict[str, object]:
    """The campaign params the notice template reads (see `messages.context.policy_view`)."""
    summary, changes = split_summary(version.summary)
    return {
        "version": version.version,
        "effective_date": human_date(version.effective_on),
        "summary": summary,
        "changes": changes,
        "policy_url": f"{settings.public_base_url.rstrip('/')}/privacy/{version.version}",
    }


def _check_input(version: str, text: str, summary: str, is_material: bool) -> None:
    if not LABEL_PATTERN.fullmatch(version):
        raise PolicyError(
            f"version label {version!r} is not usable: use 1–32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes the URL /privacy/<label>)"
        )
    if not text.strip():
        raise PolicyError(f"the text of version {version} is empty; give the full policy text")
    if is_material and not summary.strip():
        raise PolicyError(
            f"version {version} is material but its summary is empty; clients are told what "
            "changed, so give a summary (prose, and one '- ' line per change)"
        )


def publish_policy(
    rt: Runtime,
    *,
    version: str,
    effective_on: dt.date,
    text: str,
    summary: str,
    is_material: bool,
    actor: Actor,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> PublishReport:
    """Store a policy version (admins only); when material, launch the notice to every client.

    Refuses a label already published and an effective date before the newest version's.
    The notice's first batches go to `dispatch` as soon as the version is stored, the rest as
    they are planned; the report counts the whole plan.
    """
    now = now or utcnow()
    _check_input(version, text, summary, is_material)
    launched: Launch | None = None
    with rt.sessions.begin() as session:
        require(
            session,
            actor,
            "policy.publish",
            object_type="policy_version",
            object_id=version,
            reason="only an admin may publish a policy version",
            allowed=actor.is_admin,
        )
        ensure_first_version(session)
        _refuse_taken_or_early(session, version, effective_on)
        policy = PolicyVersion(
            version=version,
            effective_on=effective_on,
            text=text,
            summary=summary,
            is_material=is_material,
            published_at=now,
            published_by=actor.username,
        )
        session.add(policy)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as exc:
            raise PolicyError(
                f"version {version} was published by someone else a moment ago; "
                "`mailer policy show` tells who"
            ) from exc
        report = PublishReport(version, effective_on, is_material, now, actor.username)
        if is_material:
            campaign, launched = _launch_notice(rt, session, policy, actor, now)
            planned = summarize(session, campaign)
            report.campaign_id = campaign.id
            report.counts, report.skip_reasons = planned.counts, planned.skip_reasons
        audit(
            session,
            actor,
            "policy.publish",
            object_type="policy_version",
            object_id=version,
            effective_on=effective_on.isoformat(),
            is_material=is_material,
            campaign_id=report.campaign_id,
            counts=report.counts,
            skip_reasons=report.skip_reasons,
            # the counts of the first chunk only: the rest is planned after this commit
            partial=launched is not None and launched.is_partial,
        )
    if launched is not None:
        report.batches = len(launched.proceed(rt, dispatch))
        if launched.is_partial and report.campaign_id is not None:
            whole = campaign_status(rt, report.campaign_id)
            report.counts, report.skip_reasons = whole.counts, whole.skip_reasons
    return report


def _refuse_taken_or_early(session: Session, version: str, effective_on: dt.date) -> None:
    taken = get_version(session, version)
    if taken is not None:
        raise PolicyError(
            f"version {version} was already published on {taken.published_at:%Y-%m-%d %H:%M} "
            f"UTC by {taken.published_by}; a published version never changes, publish the "
            "change under a new label"
        )
    newest = session.scalar(
        select(PolicyVersion)
        .order_by(PolicyVersion.effective_on.desc(), PolicyVersion.id.desc())
        .limit(1)
    )
    if newest is not None and effective_on < newest.effective_on:
        raise PolicyError(
            f"version {version} would take effect on {effective_on.isoformat()}, before version "
            f"{newest.version} ({newest.effective_on.isoformat()}); give an effective date on "
            "or after it"
        )


def _launch_notice(
    rt: Runtime, session: Session, policy: PolicyVersion, actor: Actor, now: dt.datetime
) -> tuple[Campaign, Launch]:
    """Create and launch the notice campaign in the caller's transaction; link it to the version.

    `begin_launch` checks the template: if it is not usable, it raises and the caller's
    transaction stores nothing."""
    campaign = add_draft(
        session,
        actor,
        name=f"Privacy policy version {policy.version} notice",
        category=Category.POLICY,
        template=NOTICE_TEMPLATE,
        params=notice_params(rt.settings, policy),
        policy_version=policy.version,
    )
    begun = begin_launch(rt, session, campaign, actor=actor, now=now)
    policy.campaign_id = campaign.id
    return campaign, begun
