"""The campaign lifecycle: create, launch (validate, plan, enqueue), pause, resume, cancel.

draft ──launch──► sending ──(nothing queued, sending or deferred)──► completed
  │  └─launch --at─► scheduled ──(time comes)──► sending
  │                      └─(window missed)──► missed ──launch──► sending
sending ◄──resume── paused ◄──pause── sending        any open state ──cancel──► cancelled
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailer import audit
from mailer.db import rows_changed
from mailer.delivery.batches import Dispatch, batches_for, dispatch_all
from mailer.delivery.completion import maybe_complete, send_counts
from mailer.delivery.planning import (
    LAUNCHABLE,
    finish_planning,
    start_sending,
    validate_launch,
)
from mailer.enums import CampaignStatus, Category, Role, SendStatus
from mailer.errors import CampaignError, NotFoundError
from mailer.models import Campaign, Send, User, utcnow
from mailer.permissions import find_user, require_category, require_owner_or_admin
from mailer.runtime import Runtime

#: Rows planned before the first batches go out; the rest is planned while they are sent, so
#: the first message leaves well under a second after launch whatever the audience size.
FIRST_CHUNK_ROWS = 2000
#: States in which a campaign is still open.
OPEN = (
    CampaignStatus.DRAFT,
    CampaignStatus.SCHEDULED,
    CampaignStatus.MISSED,
    CampaignStatus.SENDING,
    CampaignStatus.PAUSED,
)


@dataclass
class CampaignSummary:
    id: int
    name: str
    category: str
    status: str
    status_detail: str
    created_by: str
    template: str
    audience: str
    rule_text: str
    scheduled_at: dt.datetime | None
    launched_at: dt.datetime | None
    completed_at: dt.datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    skip_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        open_ = (SendStatus.QUEUED, SendStatus.SENDING, SendStatus.DEFERRED)
        return sum(n for status, n in self.counts.items() if status not in open_)


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}; `mailer campaign list` shows them")
    return campaign


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


def launch_campaign(
    rt: Runtime,
    campaign_id: int,
    *,
    username: str,
    dispatch: Dispatch | None,
    at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> CampaignSummary:
    """Validate everything, then plan the send log and enqueue its batches (or schedule)."""
    now = now or utcnow()
    with rt.sessions.begin() as session:
        user = find_user(session, username)
        campaign = get_campaign(session, campaign_id)
        require_owner_or_admin(user, campaign.created_by)
        require_category(user, Category(campaign.category))
        if campaign.status not in LAUNCHABLE:
            raise CampaignError(
                f"campaign {campaign_id} is {campaign.status}; only a draft, scheduled or missed "
                "campaign can be launched"
            )
        rule_text = validate_launch(
            rt,
            Category(campaign.category),
            campaign.template,
            campaign.audience,
            campaign.rule_text,
            campaign.params or {},
        )
        if at is not None and at > now:
            campaign.status = CampaignStatus.SCHEDULED
            campaign.scheduled_at = at
            campaign.status_detail = ""
            campaign.updated_at = now
            audit.record(
                session,
                user.username,
                "campaign.schedule",
                object_type="campaign",
                object_id=campaign_id,
                at=at.isoformat(),
            )
            return summarize(session, campaign)
        batches = start_sending(
            rt, session, campaign, rule_text, user, now=now, first_chunk=FIRST_CHUNK_ROWS
        )
        audit.record(
            session,
            user.username,
            "campaign.launch",
            object_type="campaign",
            object_id=campaign_id,
            rule=rule_text,
            batches=len(batches),
            counts=summarize(session, campaign).counts,
        )
        summary = summarize(session, campaign)
    dispatch_all(dispatch, batches)
    # the first batches are on their way; plan everybody else while they are sent
    if finish_planning(rt, campaign_id, dispatch=dispatch):
        summary = campaign_status(rt, campaign_id)
    return summary


def _category(value: Category | str) -> Category:
    try:
        return Category(value)
    except ValueError as exc:
        known = ", ".join(c.value for c in Category)
        raise CampaignError(f"unknown category {value!r}; choose one of {known}") from exc


def pause_campaign(rt: Runtime, campaign_id: int, *, username: str, reason: str = "") -> None:
    """Stop sending within one sub-batch; queued rows wait for `resume`."""
    _transition(
        rt,
        campaign_id,
        username,
        "pause",
        (CampaignStatus.SENDING,),
        CampaignStatus.PAUSED,
        reason or f"paused by {username}",
    )


def resume_campaign(
    rt: Runtime,
    campaign_id: int,
    *,
    username: str,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> None:
    """Go on sending what is still queued; nothing already sent is sent again."""
    now = now or utcnow()
    with rt.sessions.begin() as session:
        campaign = _transition_in(
            session,
            campaign_id,
            username,
            "resume",
            (CampaignStatus.PAUSED,),
            CampaignStatus.SENDING,
            "",
        )
        batches = batches_for(
            session, campaign_id, Category(campaign.category), rt.settings.batch_size, touch_at=now
        )
        if not batches:
            maybe_complete(session, campaign_id, now)
    dispatch_all(dispatch, batches)


def cancel_campaign(rt: Runtime, campaign_id: int, *, username: str) -> None:
    """Stop for good: what is still queued or deferred is skipped as cancelled."""
    now = utcnow()
    with rt.sessions.begin() as session:
        _transition_in(
            session,
            campaign_id,
            username,
            "cancel",
            OPEN,
            CampaignStatus.CANCELLED,
            f"cancelled by {username}",
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
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(completed_at=now))


def _transition(
    rt: Runtime,
    campaign_id: int,
    username: str,
    action: str,
    sources: tuple[CampaignStatus, ...],
    target: CampaignStatus,
    detail: str,
) -> None:
    with rt.sessions.begin() as session:
        _transition_in(session, campaign_id, username, action, sources, target, detail)


def _transition_in(
    session: Session,
    campaign_id: int,
    username: str,
    action: str,
    sources: tuple[CampaignStatus, ...],
    target: CampaignStatus,
    detail: str,
) -> Campaign:
    user = find_user(session, username)
    campaign = get_campaign(session, campaign_id)
    require_owner_or_admin(user, campaign.created_by)
    changed = rows_changed(
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status.in_(sources))
            .values(status=target, status_detail=detail, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    )
    if changed != 1:
        session.refresh(campaign)
        allowed = ", ".join(sources)
        raise CampaignError(
            f"cannot {action} campaign {campaign_id}: it is {campaign.status} (needs {allowed})"
        )
    session.refresh(campaign)
    audit.record(
        session,
        username,
        f"campaign.{action}",
        object_type="campaign",
        object_id=campaign_id,
        status=target.value,
    )
    return campaign


def summarize(session: Session, campaign: Campaign) -> CampaignSummary:
    reasons = session.execute(
        select(Send.skip_reason, func.count())
        .where(Send.campaign_id == campaign.id, Send.skip_reason != "")
        .group_by(Send.skip_reason)
    )
    return CampaignSummary(
        id=campaign.id,
        name=campaign.name,
        category=campaign.category,
        status=campaign.status,
        status_detail=campaign.status_detail,
        created_by=campaign.created_by,
        template=campaign.template,
        audience=campaign.audience,
        rule_text=campaign.rule_text,
        scheduled_at=campaign.scheduled_at,
        launched_at=campaign.launched_at,
        completed_at=campaign.completed_at,
        counts=send_counts(session, campaign.id),
        skip_reasons={reason: n for reason, n in reasons},
    )


def campaign_status(rt: Runtime, campaign_id: int) -> CampaignSummary:
    with rt.sessions() as session:
        return summarize(session, get_campaign(session, campaign_id))


def list_campaigns(rt: Runtime, *, status: str | None = None) -> list[CampaignSummary]:
    with rt.sessions() as session:
        query = select(Campaign).order_by(Campaign.id)
        if status:
            query = query.where(Campaign.status == status)
        return [summarize(session, c) for c in session.scalars(query)]
