"""When is a campaign done: nothing queued, sending or deferred."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailer import audit
from mailer.db import rows_changed
from mailer.enums import CampaignStatus, SendStatus
from mailer.models import Campaign, Send


def maybe_complete(session: Session, campaign_id: int, now: dt.datetime) -> bool:
    """Mark a sending campaign completed when nothing is queued, sending or deferred."""
    open_sends = (
        select(Send.id)
        .where(
            Send.campaign_id == campaign_id,
            Send.status.in_((SendStatus.QUEUED, SendStatus.SENDING, SendStatus.DEFERRED)),
        )
        .limit(1)
    )
    if session.execute(open_sends).first() is not None:
        return False
    done = rows_changed(
        session.execute(
            update(Campaign)
            .where(
                Campaign.id == campaign_id,
                Campaign.status == CampaignStatus.SENDING,
                Campaign.planned_through.is_(None),  # not while the rest is still being planned
            )
            .values(status=CampaignStatus.COMPLETED, completed_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if done:
        audit.record(
            session,
            "system",
            "campaign.complete",
            object_type="campaign",
            object_id=campaign_id,
            counts=send_counts(session, campaign_id),
        )
    return bool(done)


def send_counts(session: Session, campaign_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Send.status, func.count())
        .where(Send.campaign_id == campaign_id)
        .group_by(Send.status)
    )
    return {status: n for status, n in rows}


def complete_now(campaign: Campaign, now: dt.datetime, detail: str) -> None:
    campaign.status = CampaignStatus.COMPLETED
    campaign.completed_at = now
    campaign.status_detail = detail
