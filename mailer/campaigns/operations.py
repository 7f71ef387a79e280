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

from mailer import audit
from mailer.access.permissions import find_user, require_category, require_owner_or_admin
from mailer.campaigns.launch import validate_launch
from mailer.campaigns.lifecycle import OPEN, complete_if_done, require_transition
from mailer.campaigns.summary import get_campaign
from mailer.delivery.batches import Dispatch, batches_for, dispatch_all
from mailer.enums import CampaignStatus, Category, Role, SendStatus
from mailer.errors import CampaignError
from mailer.models import Campaign, Send, User, utcnow
from mailer.runtime import Runtime


def create_campaign(
    rt: Runtime,
    *,
    username: str,
    name: str,
    category: Category | str,
    template: str,
    audience: str = "",
    rule_text: str = "",
    params: Mapping[str, object] | None = None,
) -> Campaign:
    """Create a draft after checking role, template and rule, so launch rarely finds surprises."""
    category = _category(category)
    with rt.sessions.begin() as session:
        user = find_user(session, username)
        require_category(user, category)
        if audience and rule_text:
            raise CampaignError("give either an audience name or a rule, not both")
        validate_launch(rt, category, template, audience, rule_text, params or {})
        campaign = add_draft(
            session,
            user,
            name=name,
            category=category,
            template=template,
            audience=audience,
            rule_text=rule_text,
            params=params,
        )
    return campaign


def add_draft(
    session: Session,
    user: User,
    *,
    name: str,
    category: Category,
    template: str,
    audience: str = "",
    rule_text: str = "",
    params: Mapping[str, object] | None = None,
    **audit_details: Any,
) -> Campaign:
    """Add a checked draft campaign to the caller's transaction, audited."""
    campaign = Campaign(
        name=name,
        category=category,
        template=template,
        audience=audience,
        rule_text=rule_text,
        created_by=user.username,
        sender_username=user.username if user.role == Role.ACCOUNT_MANAGER else "",
        status=CampaignStatus.DRAFT,
        params=dict(params or {}),
    )
    session.add(campaign)
    session.flush()
    audit.record(
        session,
        user.username,
        "campaign.create",
        object_type="campaign",
        object_id=campaign.id,
        name=name,
        category=category,
        template=template,
        audience=audience,
        rule=rule_text,
        **audit_details,
    )
    return campaign


def _category(value: Category | str) -> Category:
    try:
        return Category(value)
    except ValueError as exc:
        known = ", ".join(c.value for c in Category)
        raise CampaignError(f"unknown category {value!r}; choose one of {known}") from exc


def pause_campaign(rt: Runtime, campaign_id: int, *, username: str, reason: str = "") -> None:
    """Stop sending within one slice; queued rows wait for `resume`."""
    with rt.sessions.begin() as session:
        _check_owner(session, campaign_id, username)
        require_transition(
            session,
            campaign_id,
            CampaignStatus.PAUSED,
            actor=username,
            action="pause",
            detail=reason or f"paused by {username}",
        )


def resume_campaign(
    rt: Runtime,
    campaign_id: int,
    *,
    username: str,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> None:
    """Go on sending what is still queued; nothing already sent is sent again.

    With nothing left outstanding, the campaign completes here rather than wait for a sweep.
    """
    now = now or utcnow()
    with rt.sessions.begin() as session:
        _check_owner(session, campaign_id, username)
        require_transition(
            session,
            campaign_id,
            CampaignStatus.SENDING,
            actor=username,
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


def cancel_campaign(rt: Runtime, campaign_id: int, *, username: str) -> None:
    """Stop for good: what is still queued or deferred is skipped as cancelled, at once."""
    now = utcnow()
    with rt.sessions.begin() as session:
        _check_owner(session, campaign_id, username)
        require_transition(
            session,
            campaign_id,
            CampaignStatus.CANCELLED,
            actor=username,
            action="cancel",
            sources=OPEN,
            detail=f"cancelled by {username}",
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


def _check_owner(session: Session, campaign_id: int, username: str) -> None:
    user = find_user(session, username)
    require_owner_or_admin(user, get_campaign(session, campaign_id).created_by)
