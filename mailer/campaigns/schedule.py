"""Scheduled campaigns whose time has come: launched (the same `launch` as everyone's), marked
missed when too late to fire by themselves, or failed when they can no longer start.

Safe with several schedulers on one database: on PostgreSQL a due campaign is taken with
FOR UPDATE SKIP LOCKED, and every move is a compare-and-set.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access import Actor
from mailer.campaigns.launch import Launch, begin_launch
from mailer.campaigns.lifecycle import SCHEDULER, transition
from mailer.campaigns.times import format_time
from mailer.db import is_postgres
from mailer.delivery.batches import Batch
from mailer.enums import CampaignStatus
from mailer.errors import MailerError
from mailer.models import Campaign
from mailer.runtime import Runtime


@dataclass
class DueReport:
    started: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    #: Campaign id → why it could not start.
    failed: dict[int, str] = field(default_factory=dict)
    #: Every batch of the started campaigns, for the caller to enqueue.
    batches: list[Batch] = field(default_factory=list)


def start_due_campaigns(rt: Runtime, *, now: dt.datetime, actor: Actor = SCHEDULER) -> DueReport:
    """Launch every scheduled campaign due by `now`; the batches are the caller's to enqueue."""
    report = DueReport()
    with rt.sessions() as session:
        due = select(Campaign.id).where(
            Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at <= now
        )
        ids = list(session.scalars(due))
    for campaign_id in ids:
        try:
            begun = _start_one(rt, campaign_id, actor, now, report)
        except MailerError as exc:
            report.failed[campaign_id] = str(exc)
            with rt.sessions.begin() as session:
                transition(
                    session,
                    campaign_id,
                    CampaignStatus.FAILED,
                    actor=actor,
                    action="fail",
                    detail=f"could not start: {exc}; fix that, then launch it again",
                    sources=(CampaignStatus.SCHEDULED,),
                    now=now,
                )
            continue
        if begun is not None:
            report.batches.extend(begun.proceed(rt, dispatch=None))
            report.started.append(campaign_id)
    return report


def _start_one(
    rt: Runtime, campaign_id: int, actor: Actor, now: dt.datetime, report: DueReport
) -> Launch | None:
    window = dt.timedelta(seconds=rt.settings.missed_window_s)
    with rt.sessions.begin() as session:
        query = select(Campaign).where(
            Campaign.id == campaign_id, Campaign.status == CampaignStatus.SCHEDULED
        )
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        campaign = session.scalars(query).one_or_none()
        if campaign is None:
            return None  # another scheduler has it
        assert campaign.scheduled_at is not None
        if now - campaign.scheduled_at > window:
            _mark_missed(session, campaign, actor, now, rt.settings.timezone)
            report.missed.append(campaign_id)
            return None
        return begin_launch(
            rt,
            session,
            campaign,
            actor=actor,
            now=now,
            scheduled_at=campaign.scheduled_at.isoformat(),
        )


def _mark_missed(
    session: Session, campaign: Campaign, actor: Actor, now: dt.datetime, zone_name: str
) -> None:
    """Too late to fire by itself (workers were down, a backup was restored): wait for a person."""
    assert campaign.scheduled_at is not None
    late = now - campaign.scheduled_at
    transition(
        session,
        campaign.id,
        CampaignStatus.MISSED,
        actor=actor,
        action="missed",
        detail=(
            f"missed its start at {format_time(campaign.scheduled_at, zone_name)} by "
            f"{int(late.total_seconds() // 60)} minutes; launch it again to send"
        ),
        sources=(CampaignStatus.SCHEDULED,),
        now=now,
        late_s=int(late.total_seconds()),
    )
