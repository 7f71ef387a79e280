"""Prometheus metrics, read from the database (and the broker) at scrape time.

Every process shares the truth in PostgreSQL, so one scrape of `mailer serve`'s `/metrics`
shows the whole service, whichever worker sent what:

- `mailer_sends{status,category}`: sends of open campaigns and of those completed in the
  last day
- `mailer_campaigns{status}`: campaigns in each state
- `mailer_queue_depth{queue,state}` and `mailer_broker_up`: broker batches waiting, in
  progress and delayed
- `mailer_processes_alive{kind}`, `mailer_heartbeat_age_seconds{kind,host,pid}`: workers and
  schedulers heard from
- `mailer_last_sweep_age_seconds`: since any scheduler last swept
- `mailer_delivery_events_total{source,kind}`: report and provider events taken
- `mailer_opt_outs{source}`, `mailer_suppressions{reason}`, `mailer_alerts_undelivered`
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select

from mailer.delivery.heartbeats import last_sweep_at
from mailer.enums import CampaignStatus
from mailer.models import (
    Alert,
    Campaign,
    DeliveryEvent,
    Heartbeat,
    OptOut,
    Send,
    Suppression,
    utcnow,
)
from mailer.runtime import Runtime

#: Campaigns whose sends are counted: still open, or completed this recently.
_RECENT = dt.timedelta(days=1)
_OPEN = (CampaignStatus.SCHEDULED, CampaignStatus.SENDING, CampaignStatus.PAUSED)
#: Heartbeats older than this are of processes long gone (not shown).
_HEARTBEAT_WINDOW = dt.timedelta(hours=1)

QueueDepths = Callable[[], dict[str, dict[str, int]]]


class MailerCollector(Collector):
    """Reads the metrics at each scrape (a few grouped counts, all on indexed columns)."""

    def __init__(self, rt: Runtime, queue_depths: QueueDepths | None = None) -> None:
        self.rt = rt
        self.queue_depths = queue_depths

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with self.rt.sessions() as session:
            yield from self._sends(session, now)
            yield from self._simple(session, now)
            yield from self._processes(session, now)
        if self.queue_depths is not None:
            yield from self._queues()

    def _sends(self, session: Any, now: dt.datetime) -> Iterator[Metric]:
        counted = select(Campaign.id).where(
            or_(
                Campaign.status.in_([s.value for s in _OPEN]),
                Campaign.completed_at >= now - _RECENT,
            )
        )
        sends = GaugeMetricFamily(
            "mailer_sends",
            "Sends of open campaigns and of those completed in the last day",
            labels=["status", "category"],
        )
        rows = session.execute(
            select(Send.status, Send.category, func.count())
            .where(Send.campaign_id.in_(counted))
            .group_by(Send.status, Send.category)
        )
        for status, category, n in rows:
            sends.add_metric([status, category], n)
        yield sends
        campaigns = GaugeMetricFamily("mailer_campaigns", "Campaigns by state", labels=["status"])
        by_status = dict(
            session.execute(select(Campaign.status, func.count()).group_by(Campaign.status)).all()
        )
        for status in CampaignStatus:
            campaigns.add_metric([status.value], by_status.get(status.value, 0))
        yield campaigns

    def _simple(self, session: Any, now: dt.datetime) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "mailer_delivery_events",
            "Bounce, complaint, delivery and unsubscribe events taken from reports and providers",
            labels=["source", "kind"],
        )
        for source, kind, n in session.execute(
            select(DeliveryEvent.source, DeliveryEvent.kind, func.count())
            .where(DeliveryEvent.source != "mailgun-token")
            .group_by(DeliveryEvent.source, DeliveryEvent.kind)
        ):
            events.add_metric([source, kind], n)
        yield events
        opt_outs = GaugeMetricFamily("mailer_opt_outs", "Active opt-outs", labels=["source"])
        for source, n in session.execute(
            select(OptOut.source, func.count())
            .where(OptOut.revoked_at.is_(None))
            .group_by(OptOut.source)
        ):
            opt_outs.add_metric([source], n)
        yield opt_outs
        suppressions = GaugeMetricFamily(
            "mailer_suppressions", "Suppressed addresses", labels=["reason"]
        )
        for reason, n in session.execute(
            select(Suppression.reason, func.count()).group_by(Suppression.reason)
        ):
            suppressions.add_metric([reason], n)
        yield suppressions
        yield GaugeMetricFamily(
            "mailer_alerts_undelivered",
            "Operator alerts raised and not delivered yet",
            value=session.scalar(select(func.count()).where(Alert.sent_at.is_(None))) or 0,
        )

    def _processes(self, session: Any, now: dt.datetime) -> Iterator[Metric]:
        alive = GaugeMetricFamily(
            "mailer_processes_alive", "Processes that reported in the last minute", labels=["kind"]
        )
        age = GaugeMetricFamily(
            "mailer_heartbeat_age_seconds",
            "Seconds since each process last reported",
            labels=["kind", "host", "pid"],
        )
        counts = {"worker": 0, "scheduler": 0}
        for beat in session.scalars(
            select(Heartbeat).where(Heartbeat.seen_at >= now - _HEARTBEAT_WINDOW)
        ):
            seconds = (now - beat.seen_at).total_seconds()
            age.add_metric([beat.kind, beat.host, str(beat.pid)], seconds)
            if seconds < 60:
                counts[beat.kind] = counts.get(beat.kind, 0) + 1
        for kind, n in counts.items():
            alive.add_metric([kind], n)
        yield alive
        yield age
        last = last_sweep_at(session)
        sweep = GaugeMetricFamily(
            "mailer_last_sweep_age_seconds",
            "Seconds since any scheduler last swept (NaN: never)",
            value=(now - last).total_seconds() if last is not None else float("nan"),
        )
        yield sweep

    def _queues(self) -> Iterator[Metric]:
        assert self.queue_depths is not None
        depth = GaugeMetricFamily(
            "mailer_queue_depth", "Broker batches per queue", labels=["queue", "state"]
        )
        up = GaugeMetricFamily("mailer_broker_up", "Whether the broker answered this scrape")
        try:
            depths = self.queue_depths()
        except Exception:
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for queue, states in depths.items():
                for state, n in states.items():
                    depth.add_metric([queue, state], n)
            yield depth
        yield up


def render_metrics(rt: Runtime, queue_depths: QueueDepths | None = None) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MailerCollector(rt, queue_depths))
    return generate_latest(registry)
