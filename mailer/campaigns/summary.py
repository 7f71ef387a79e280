"""What a campaign looks like now: its state, counts by send status and skip reasons."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, require
from mailer.access.permissions import may_see_campaign
from mailer.campaigns.lifecycle import OUTSTANDING, send_counts
from mailer.enums import Role
from mailer.errors import NotFoundError
from mailer.models import Campaign, Send
from mailer.runtime import Runtime


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
        return sum(n for status, n in self.counts.items() if status not in OUTSTANDING)


def get_campaign(session: Session, campaign_id: int) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}; `mailer campaign list` shows them")
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


def campaign_status(
    rt: Runtime, campaign_id: int, *, actor: Actor | None = None
) -> CampaignSummary:
    """A campaign's summary; with `actor`, refused (audited) for an account manager who did
    not create it. Without one (the system, progress watchers) it is not checked."""
    with rt.sessions() as session:
        campaign = get_campaign(session, campaign_id)
        if actor is not None:
            require(
                session,
                actor,
                "campaign.view",
                object_type="campaign",
                object_id=campaign_id,
                allowed=may_see_campaign(actor, campaign),
                reason=f"campaign {campaign_id} is not one of yours",
            )
        return summarize(session, campaign)


def list_campaigns(
    rt: Runtime, *, status: str | None = None, actor: Actor | None = None
) -> list[CampaignSummary]:
    """Every campaign, oldest first; an account manager `actor` sees only their own."""
    with rt.sessions() as session:
        query = select(Campaign).order_by(Campaign.id)
        if status:
            query = query.where(Campaign.status == status)
        if actor is not None and actor.role is Role.ACCOUNT_MANAGER:
            query = query.where(Campaign.created_by == actor.username)
        return [summarize(session, c) for c in session.scalars(query)]
