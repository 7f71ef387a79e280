"""The periodic sweep (`mailer scheduler`): start scheduled campaigns, settle the sends of
stopped workers (from their journals, else by lease), retry deferred sends when due, re-enqueue
lost batches, and, as a backstop, complete campaigns with nothing left outstanding (normally
whoever records the last send completes it).

Safe with several schedulers on one database: every change is a conditional UPDATE, and on
PostgreSQL due campaigns and send rows are taken with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, literal_column, select

from mailer.campaigns.lifecycle import SCHEDULER, complete_if_done
from mailer.delivery.batches import Batch, Dispatch, cut_batches, dispatch_all
from mailer.delivery.planning import finish_planning
from mailer.delivery.recovery import move_sends, recover
from mailer.delivery.transactions import in_transaction
from mailer.enums import CampaignStatus, SendStatus
from mailer.models import Campaign, Send, utcnow
from mailer.runtime import Runtime

#: The send log as a Core table, for the bulk statements of the hot path.
_sends = cast(Table, Send.__table__)


@dataclass
class TickReport:
    started: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    failed_to_start: dict[int, str] = field(default_factory=dict)
    recovered_sent: int = 0  #: accepted before their worker stopped, as its journal says
    requeued: int = 0  #: stopped workers' sends queued again (never begun, or at-least-once)
    unknown: int = 0  #: stopped workers' marketing mail that may have gone out; never resent
    retried: int = 0
    completed: list[int] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)


def scheduler_tick(
    rt: Runtime, *, dispatch: Dispatch | None, now: dt.datetime | None = None
) -> TickReport:
    """One pass of the sweep; enqueue what it found through `dispatch`.

    Send rows are changed in id order, a chunk per transaction, skipping rows a worker holds
    (see `mailer.delivery.transactions`): the sweep never waits for a worker, so never
    deadlocks with one.
    """
    now = now or utcnow()
    report = TickReport()
    _start_scheduled(rt, report, now)
    _finish_interrupted_planning(rt, report, now)
    recovered = recover(rt, now)
    report.recovered_sent = recovered.sent
    report.requeued = recovered.requeued
    report.unknown = recovered.unknown
    report.batches.extend(recovered.batches)
    _retry_due(rt, report, now)
    # a worker process that died also took the batches it had fetched from the broker:
    # enqueue every waiting row again now rather than a lease period later (a batch enqueued
    # twice costs one empty claim)
    _requeue_stale(rt, report, now, is_everything=recovered.stopped_workers > 0)
    for campaign_id in _sending_campaigns(rt):
        if in_transaction(
            rt.sessions,
            partial(complete_if_done, campaign_id=campaign_id, actor=SCHEDULER, now=now),
            what=f"campaign {campaign_id}: completing",
        ):
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


def _retry_due(rt: Runtime, report: TickReport, now: dt.datetime) -> None:
    with rt.sessions() as session:
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
    for (campaign_id, category), ids in _by_campaign(due).items():
        changed = move_sends(
            rt,
            ids,
            SendStatus.DEFERRED,
            SendStatus.QUEUED,
            now,
            only_if=(_sends.c.next_attempt_at <= now,),
        )
        report.retried += len(changed)
        report.batches.extend(cut_batches(campaign_id, category, changed, rt.settings.batch_size))


def _requeue_stale(
    rt: Runtime, report: TickReport, now: dt.datetime, *, is_everything: bool = False
) -> None:
    """Queued rows nobody has touched for a lease period: their broker message was lost.
    With `is_everything`, every queued row of a sending campaign.

    They are touched (updated_at = now) as they are re-enqueued, so they count as stale again
    only a lease period later.
    """
    stale_before = now - dt.timedelta(seconds=0 if is_everything else rt.settings.lease_s)
    with rt.sessions() as session:
        stale = list(
            session.execute(
                select(Send.id, Send.campaign_id, Send.category)
                .join(Campaign, Campaign.id == Send.campaign_id)
                .where(
                    Send.status == literal_column("'queued'"),
                    Send.updated_at < stale_before,
                    Campaign.status == CampaignStatus.SENDING,
                )
            )
        )
    for (campaign_id, category), ids in _by_campaign(stale).items():
        changed = move_sends(
            rt,
            ids,
            SendStatus.QUEUED,
            SendStatus.QUEUED,
            now,
            only_if=(_sends.c.updated_at < stale_before,),
        )
        report.batches.extend(cut_batches(campaign_id, category, changed, rt.settings.batch_size))


def _by_campaign(rows: Iterable[Any]) -> dict[tuple[int, str], list[int]]:
    grouped: dict[tuple[int, str], list[int]] = {}
    for send_id, campaign_id, category in rows:
        grouped.setdefault((campaign_id, category), []).append(send_id)
    return grouped


def _sending_campaigns(rt: Runtime) -> list[int]:
    with rt.sessions() as session:
        return list(
            session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING))
        )
