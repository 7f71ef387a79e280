"""Heartbeats: each worker process and scheduler says it is alive, and what it last did.

`mailer status` reads them; `mailer campaign status` warns when no scheduler has swept lately.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select, update

from mailer.db import rows_changed
from mailer.delivery.journal import this_host
from mailer.enums import CampaignStatus, SendStatus
from mailer.models import Campaign, Heartbeat, Send, utcnow
from mailer.runtime import Runtime

#: Seconds between heartbeats of a worker process.
WORKER_BEAT_S = 5.0
#: A process not heard from this long counts as gone.
STALE_AFTER_S = 30.0
#: `mailer campaign status` warns when no scheduler has swept for this long.
SWEEP_OVERDUE_S = 120.0
#: Heartbeats of processes gone this long are deleted by the sweep.
FORGET_AFTER = dt.timedelta(days=1)


def beat(rt: Runtime, kind: str, details: dict[str, Any], *, started_at: dt.datetime) -> None:
    """Record that this process (`kind` worker or scheduler) is alive, with `details`."""
    now = utcnow()
    host, pid = this_host(), os.getpid()
    name = f"{kind}:{host}:{pid}"
    with rt.sessions.begin() as session:
        changed = rows_changed(
            session.execute(
                update(Heartbeat).where(Heartbeat.name == name).values(seen_at=now, details=details)
            )
        )
        if not changed:
            session.add(
                Heartbeat(
                    name=name,
                    kind=kind,
                    host=host,
                    pid=pid,
                    started_at=started_at,
                    seen_at=now,
                    details=details,
                )
            )


def forget_old(rt: Runtime, now: dt.datetime) -> None:
    with rt.sessions.begin() as session:
        session.execute(delete(Heartbeat).where(Heartbeat.seen_at < now - FORGET_AFTER))


@dataclass
class ProcessInfo:
    kind: str
    host: str
    pid: int
    started_at: dt.datetime
    seen_at: dt.datetime
    is_alive: bool
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "seen_at": self.seen_at.isoformat(),
            "alive": self.is_alive,
            "details": self.details,
        }


@dataclass
class SendingCampaign:
    id: int
    name: str
    category: str
    total: int
    open: int  #: queued, sending or deferred

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "total": self.total,
            "open": self.open,
        }


@dataclass
class SystemStatus:
    processes: list[ProcessInfo] = field(default_factory=list)
    last_sweep_at: dt.datetime | None = None
    campaigns: list[SendingCampaign] = field(default_factory=list)

    @property
    def workers_alive(self) -> int:
        return sum(1 for p in self.processes if p.kind == "worker" and p.is_alive)

    @property
    def schedulers_alive(self) -> int:
        return sum(1 for p in self.processes if p.kind == "scheduler" and p.is_alive)


def system_status(rt: Runtime, now: dt.datetime | None = None) -> SystemStatus:
    """Processes heard from in the last day, the last sweep, and the campaigns sending."""
    now = now or utcnow()
    status = SystemStatus()
    with rt.sessions() as session:
        rows = session.scalars(
            select(Heartbeat)
            .where(Heartbeat.seen_at >= now - FORGET_AFTER)
            .order_by(Heartbeat.kind, Heartbeat.host, Heartbeat.pid)
        )
        for row in rows:
            is_alive = (now - row.seen_at).total_seconds() < STALE_AFTER_S
            status.processes.append(
                ProcessInfo(
                    row.kind, row.host, row.pid, row.started_at, row.seen_at, is_alive, row.details
                )
            )
        status.last_sweep_at = last_sweep_at(session)
        sending = session.execute(
            select(Campaign.id, Campaign.name, Campaign.category)
            .where(Campaign.status == CampaignStatus.SENDING)
            .order_by(Campaign.id)
        ).all()
        for campaign_id, name, category in sending:
            counts = dict(
                session.execute(
                    select(Send.status, func.count())
                    .where(Send.campaign_id == campaign_id)
                    .group_by(Send.status)
                ).all()
            )
            open_ = sum(
                counts.get(s.value, 0)
                for s in (SendStatus.QUEUED, SendStatus.SENDING, SendStatus.DEFERRED)
            )
            status.campaigns.append(
                SendingCampaign(campaign_id, name, category, sum(counts.values()), open_)
            )
    return status


def last_sweep_at(session: Any) -> dt.datetime | None:
    """When a scheduler last finished a sweep (any scheduler, any host)."""
    value: dt.datetime | None = session.scalar(
        select(func.max(Heartbeat.seen_at)).where(Heartbeat.kind == "scheduler")
    )
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def sweep_overdue_warning(rt: Runtime, now: dt.datetime | None = None) -> str:
    """A sentence for `campaign status` when no scheduler has swept lately; "" otherwise."""
    now = now or utcnow()
    with rt.sessions() as session:
        last = last_sweep_at(session)
    if last is not None and (now - last).total_seconds() < SWEEP_OVERDUE_S:
        return ""
    when = "has ever swept" if last is None else f"has swept since {last:%Y-%m-%d %H:%M:%S} UTC"
    return (
        f"warning: no scheduler {when}; scheduled campaigns will not start, deferred sends "
        "will not be retried and crashed workers' sends not recovered. Run `mailer scheduler`."
    )
