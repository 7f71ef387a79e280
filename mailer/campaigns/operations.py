"""What people do to campaigns besides launching them: create, pause, resume, cancel.

Every status change goes through `lifecycle.transition`; none of these needs the scheduler to
settle: a resume with nothing left outstanding completes the campaign, a cancel skips what is
still queued or deferred at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.access import Actor, audit
from mailer.campaigns.launch import validate_launch
from mailer.campaigns.lifecycle import OPEN, complete_if_done, require_transition
from mailer.campaigns.rights import require_campaign_right
from mailer.campaigns.summary import get_campaign
from mailer.delivery.batches import Dispatch, batches_for, dispatch_all
from mailer.enums import CampaignStatus, Category, Role, SendStatus
from mailer.errors import CampaignError
from mailer.models import Campaign, Send, utcnow
from mailer.runtime import Runtime
from mailer.template_store import choose_source


def create_campaign(
    rt: Runtime,
    *,
    actor: Actor,
    name: str,
    category: Category | str,
    template: str,
    audience: str = "",
    rule_text: str = "",
    params: Mapping[str, object] | None = None,
    subject: str = "",
) -> Campaign:
    """Create a draft after checking role, template and rule, so launch rarely finds surprises.

    `template` names a built-in or a stored template (its latest version is pinned at launch);
    `subject`, when given, replaces the template's subject."""
    category = _category(category)
    subject = _subject(subject)
    name = _name(name)
    with rt.sessions.begin() as session:
        require_campaign_right(session, actor, "create", category=category)
        if audience and rule_text:
            raise CampaignError("give either an audience name or a rule, not both")
        validate_launch(
            rt,
            category,
            template,
            audience,
            rule_text,
            params or {},
            session=session,
            subject=subject,
        )
        campaign = add_draft(
            session,
            actor,
            name=name,
            category=category,
            template=template,
            audience=audience,
            rule_text=rule_text,
            params=params,
            subject=subject,
            template_id=choose_source(session, rt.settings, template).template_id,
        )
    return campaign


def add_draft(
    session: Session,
    actor: Actor,
    *,
    name: str,
    category: Category,
    template: str,
    audience: str = "",
    rule_text: str = "",
    params: Mapping[str, object] | None = None,
    subject: str = "",
    template_id: int | None = None,
    **audit_details: Any,
) -> Campaign:
    """Add a checked draft campaign to the caller's transaction, audited."""
    campaign = Campaign(
        name=name,
        category=category,
        template=template,
        template_id=template_id,
        subject=subject,
        audience=audience,
        rule_text=rule_text,
        created_by=actor.username,
        sender_username=actor.username if actor.role == Role.ACCOUNT_MANAGER else "",
        status=CampaignStatus.DRAFT,
        params=dict(params or {}),
    )
    session.add(campaign)
    session.flush()
    audit(
        session,
        actor,
        "campaign.create",
        object_type="campaign",
        object_id=campaign.id,
        name=name,
        category=category,
        template=template,
        audience=audience,
        rule=rule_text,
        **({"subject": subject} if subject else {}),
        **audit_details,
    )
    return campaign


def edit_draft(
    rt: Runtime,
    campaign_id: int,
    *,
    actor: Actor,
    name: str,
    template: str,
    rule_text: str,
    subject: str | None = None,
) -> Campaign:
    """Change a draft's name, template, rule and (unless None) own subject, checked as at
    create; audited with the old values.

    Only a draft changes: a launched campaign's rule and template are what it was sent with.
    """
    with rt.sessions.begin() as session:
        campaign = get_campaign(session, campaign_id)
        category = Category(campaign.category)
        require_campaign_right(session, actor, "edit", category=category, campaign=campaign)
        if campaign.status != CampaignStatus.DRAFT:
            raise CampaignError(
                f"campaign {campaign_id} is {campaign.status}; only a draft can be edited "
                "(create a new campaign instead)"
            )
        name = _name(name)
        subject = campaign.subject if subject is None else _subject(subject)
        validate_launch(rt, category, template, "", rule_text, session=session, subject=subject)
        before = {
            "name": campaign.name,
            "template": campaign.template,
            "rule": campaign.rule_text,
            "subject": campaign.subject,
        }
        campaign.name = name
        campaign.template = template
        campaign.template_id = choose_source(session, rt.settings, template).template_id
        campaign.subject = subject
        campaign.rule_text = rule_text
        campaign.audience = ""
        campaign.updated_at = utcnow()
        audit(
            session,
            actor,
            "campaign.edit",
            object_type="campaign",
            object_id=campaign_id,
            before=before,
            after={
                "name": campaign.name,
                "template": template,
                "rule": rule_text,
                "subject": subject,
            },
        )
    return campaign


#: Longest own subject a campaign may have, in characters (a subject line, not a body).
MAX_SUBJECT_CHARS = 300


def _name(value: str) -> str:
    name = value.strip()
    if not name:
        raise CampaignError("give the campaign a name, e.g. 'Open enrollment 2027'")
    return name


def _subject(value: str) -> str:
    subject = " ".join(value.split())
    if len(subject) > MAX_SUBJECT_CHARS:
        raise CampaignError(
            f"the subject has {len(subject)} characters; keep it under {MAX_SUBJECT_CHARS}"
        )
    return subject


def _category(value: Category | str) -> Category:
    try:
        return Category(value)
    except ValueError as exc:
        known = ", ".join(c.value for c in Category)
        raise CampaignError(f"unknown category {value!r}; choose one of {known}") from exc


def pause_campaign(rt: Runtime, campaign_id: int, *, actor: Actor, reason: str = "") -> None:
    """Stop sending within one slice; queued rows wait for `resume`."""
    with rt.sessions.begin() as session:
        _check_right(session, actor, "pause", campaign_id)
        require_transition(
            session,
            campaign_id,
            CampaignStatus.PAUSED,
            actor=actor,
            action="pause",
            detail=reason or f"paused by {actor.username}",
        )


def resume_campaign(
    rt: Runtime,
    campaign_id: int,
    *,
    actor: Actor,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> None:
    """Go on sending what is still queued; nothing already sent is sent again.

    With nothing left outstanding, the campaign completes here rather than wait for a sweep.
    """
    now = now or utcnow()
    with rt.sessions.begin() as session:
        _check_right(session, actor, "resume", campaign_id)
        require_transition(
            session,
            campaign_id,
            CampaignStatus.SENDING,
            actor=actor,
            action="resume",
            sources=(CampaignStatus.PAUSED,),
            now=now,
        )
        category = Category(get_campaign(session, campaign_id).category)
        batches = batches_for(session, campaign_id, category, rt.settings.batch_size, touch_at=now)
    dispatch_all(dispatch, batches)
    if not batches:
        # a separate transaction after the resume committed: a worker that recorded the last
        # sends of the paused campaign meanwhile either sees `sending` or is seen here
        with rt.sessions.begin() as session:
            complete_if_done(session, campaign_id, now=now)


def cancel_campaign(rt: Runtime, campaign_id: int, *, actor: Actor) -> None:
    """Stop for good: what is still queued or deferred is skipped as cancelled, at once."""
    now = utcnow()
    with rt.sessions.begin() as session:
        _check_right(session, actor, "cancel", campaign_id)
        require_transition(
            session,
            campaign_id,
            CampaignStatus.CANCELLED,
            actor=actor,
            action="cancel",
            sources=OPEN,
            detail=f"cancelled by {actor.username}",
            values={"completed_at": now},
            now=now,
        )
        session.execute(
            update(Send)
            .where(
                Send.campaign_id == campaign_id,
                Send.status.in_((SendStatus.QUEUED, SendStatus.DEFERRED)),
            )
            .values(
                status=SendStatus.SKIPPED,
                skip_reason="cancelled",
                updated_at=now,
                next_attempt_at=None,
            )
        )


#: What a person may do to a running or scheduled campaign by name (web buttons, API verbs).
ACTIONS = ("pause", "resume", "cancel")


def change_campaign(
    rt: Runtime, campaign_id: int, action: str, *, actor: Actor, dispatch: Dispatch | None
) -> None:
    """Pause, resume or cancel a campaign by the action's name."""
    if action == "pause":
        pause_campaign(rt, campaign_id, actor=actor)
    elif action == "resume":
        resume_campaign(rt, campaign_id, actor=actor, dispatch=dispatch)
    elif action == "cancel":
        cancel_campaign(rt, campaign_id, actor=actor)
    else:
        raise ValueError(f"unknown campaign action {action!r}: choose one of {', '.join(ACTIONS)}")


def _check_right(session: Session, actor: Actor, verb: str, campaign_id: int) -> None:
    campaign = get_campaign(session, campaign_id)
    category = Category(campaign.category)
    require_campaign_right(session, actor, verb, category=category, campaign=campaign)
