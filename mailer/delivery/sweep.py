"""The periodic sweep (`mailer scheduler`): start scheduled campaigns, recover expired leases,
retry deferred sends when due, re-enqueue lost batches, and, as a backstop, complete campaigns
with nothing left outstanding (normally whoever records the last send completes it).

Safe with several schedulers on one database: every change is a conditional UPDATE, and on
PostgreSQL due campaigns are taken with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Table, literal_column, select, update
from sqlalchemy.orm import Session

from mailer import audit
from mailer.campaigns.lifecycle import complete_if_done
from mailer.delivery.batches import Batch, Dispatch, batches_for, cut_batches, dispatch_all
from mailer.delivery.planning import finish_planning
from mailer.enums import CampaignStatus, Category, SendStatus
from mailer.models import Campaign, Send, utcnow
from mailer.runtime import Runtime

#: Who the audit log names for what the sweep does.
SCHEDULER = "scheduler"
#: The send log as a Core table, for the bulk statements of the hot path.
_sends = cast(Table, Send.__table__)


@dataclass
class TickReport:
    started: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    failed_to_start: dict[int, str] = field(default_factory=dict)
    requeued: int = 0  #: expired leases of at-least-once mail, sent again
    unknown: int = 0  #: expired leases of at-most-once mail, never resent
    retried: int = 0
    completed: list[int] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)


def scheduler_tick(
    rt: Runtime, *, dispatch: Dispatch | None, now: dt.datetime | None = None
) -> TickReport:
    """One pass of the sweep; enqueue what it found through `dispatch`."""
    now = now or utcnow()
    report = TickReport()
    _start_scheduled(rt, report, now)
    _finish_interrupted_planning(rt, report, now)
    with rt.sessions.begin() as session:
        _recover_leases(session, rt.settings.batch_size, report, now)
        _retry_due(session, rt.settings.batch_size, report, now)
        _requeue_stale(session, rt.settings.batch_size, rt.settings.lease_s, report, now)
        for campaign_id in _sending_campaigns(session):
            if complete_if_done(session, campaign_id, actor=SCHEDULER, now=now):
                report.completed.append(campaign_id)
    dispatch_all(dispatch, report.batches)
    return report


def _start_scheduled(rt: Runtime, report: TickReport, now: dt.datetime) -> None:
    # imported here: mailer.campaigns builds on mailer.delivery (planning, batches)
    from mailer.campaigns.schedule import start_due_campaigns

    due = start_due_campaigns(rt, actor=SCHEDULER, now=now)
    report.started.extend(due.started)
    report.missed.extend(due.missed)
    report.failed_to_start.update(due.failed)
    report.batches.extend(due.batches)


def _finish_interrupted_planning(rt: Runtime, report: TickReport, now: dt.datetime) -> None:
    """A launcher that died between the first chunk and the rest: plan the rest here."""
    stale_before = now - dt.timedelta(seconds=rt.settings.lease_s)
    with rt.sessions() as session:
        ids = list(
            session.scalars(
                select(Campaign.id).where(
                    Campaign.planned_through.is_not(None), Campaign.updated_at < stale_before
                )
            )
        )
    for campaign_id in ids:
        report.batches.extend(finish_planning(rt, campaign_id, dispatch=None, now=now))


def _recover_leases(
    session: Session, batch_size: int, report: TickReport, now: dt.datetime
) -> None:
    """Sends whose worker died: resend service/policy mail, mark marketing mail unknown."""
    expired = list(
        session.execute(
            select(Send.id, Send.campaign_id, Send.category).where(
                Send.status == literal_column("'sending'"), Send.lease_expires_at < now
            )
        )
    )
    by_campaign: dict[tuple[int, str], list[int]] = {}
    for send_id, campaign_id, category in expired:
        by_campaign.setdefault((campaign_id, category), []).append(send_id)
    for (campaign_id, category), ids in by_campaign.items():
        at_least_once = Category(category).is_at_least_once
        target = SendStatus.QUEUED if at_least_once else SendStatus.UNKNOWN
        changed = _move(
            session,
            ids,
            SendStatus.SENDING,
            target,
            now,
            reply=""
            if at_least_once
            else "worker lost while sending; not resent (marketing mail is sent at most once)",
        )
        if at_least_once:
            report.requeued += len(changed)
            report.batches.extend(cut_batches(campaign_id, category, changed, batch_size))
        else:
            report.unknown += len(changed)
        if changed:
            audit.record(
                session,
                SCHEDULER,
                "sends.lease_expired",
                object_type="campaign",
                object_id=campaign_id,
                count=len(changed),
                now_status=target.value,
            )


def _retry_due(session: Session, batch_size: int, report: TickReport, now: dt.datetime) -> None:
    due = list(
        session.execute(
            select(Send.id, Send.campaign_id, Send.category)
            .join(Campaign, Campaign.id == Send.campaign_id)
            .where(
                Send.status == literal_column("'deferred'"),
                Send.next_attempt_at <= now,
                Campaign.status == CampaignStatus.SENDING,
            )
        )
    )
    by_campaign: dict[tuple[int, str], list[int]] = {}
    for send_id, campaign_id, category in due:
        by_campaign.setdefault((campaign_id, category), []).append(send_id)
    for (campaign_id, category), ids in by_campaign.items():
        changed = _move(session, ids, SendStatus.DEFERRED, SendStatus.QUEUED, now)
        report.retried += len(changed)
        report.batches.extend(cut_batches(campaign_id, category, changed, batch_size))


def _requeue_stale(
    session: Session, batch_size: int, lease_s: int, report: TickReport, now: dt.datetime
) -> None:
    """Queued rows nobody has touched for a lease period: their broker message was lost."""
    stale_before = now - dt.timedelta(seconds=lease_s)
    campaigns = session.execute(
        select(Campaign.id, Campaign.category).where(Campaign.status == CampaignStatus.SENDING)
    )
    for campaign_id, category in list(campaigns):
        report.batches.extend(
            batches_for(
                session,
                campaign_id,
                Category(category),
                batch_size,
                touch_at=now,
                stale_before=stale_before,
            )
        )


def _move(
    session: Session,
    ids: list[int],
    source: SendStatus,
    target: SendStatus,
    now: dt.datetime,
    reply: str = "",
) -> list[int]:
    values: dict[str, object] = {
        "status": target.value,
        "lease_expires_at": None,
        "updated_at": now,
        "next_attempt_at": None,
    }
    if reply:
        values["smtp_reply"] = reply
    changed: list[int] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        rows = session.execute(
            update(_sends)
            .where(_sends.c.id.in_(chunk), _sends.c.status == source.value)
            .values(**values)
            .returning(_sends.c.id)
        )
        changed.extend(row.id for row in rows)
    return changed


def _sending_campaigns(session: Session) -> list[int]:
    return list(
        session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING))
    )
