"""What `mailer scheduler` does besides sweeping: rate checks, alerts, daily jobs.

Every `UPKEEP_INTERVAL_S` the scheduler checks the complaint and hard-bounce rates of every
sending campaign (`mailer.deliverability.rates`), raises the alerts the database shows a cause
for (`mailer.alerts.scan`), runs the daily jobs that are due (`mailer.jobs`) and delivers the
alerts not delivered yet. Each part fails alone: an error is logged and the rest still runs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from mailer import alerts
from mailer.deliverability.rates import check_rates
from mailer.enums import CampaignStatus
from mailer.models import Campaign
from mailer.runtime import Runtime

_log = logging.getLogger("mailer.upkeep")

#: How often a scheduler does its upkeep (rate counts cost a scan of each sending campaign).
UPKEEP_INTERVAL_S = 30.0


def check_campaign_rates(rt: Runtime, now: dt.datetime) -> dict[int, str]:
    """Pause every sending campaign whose rates are over their limits; {campaign: reason}."""
    paused: dict[int, str] = {}
    with rt.sessions() as session:
        sending = list(
            session.scalars(
                select(Campaign.id).where(Campaign.status == CampaignStatus.SENDING.value)
            )
        )
    for campaign_id in sending:
        with rt.sessions.begin() as session:
            reason = check_rates(session, rt.settings, campaign_id, now)
        if reason:
            paused[campaign_id] = reason
    return paused


def scan_alerts(rt: Runtime, now: dt.datetime) -> int:
    with rt.sessions.begin() as session:
        return alerts.scan(session, rt.settings, now)


def watch_scheduler(rt: Runtime, watching_since: dt.datetime, now: dt.datetime) -> int:
    """What a worker process does now and then: alert when no scheduler sweeps (the scheduler
    cannot report its own absence), and deliver alerts still pending. Never raises."""
    try:
        with rt.sessions.begin() as session:
            alerts.check_scheduler(session, rt.settings, now, watching_since=watching_since)
        return alerts.deliver_pending(rt)
    except Exception:
        _log.exception("could not check on the scheduler")
        return 0


def run_upkeep(rt: Runtime, now: dt.datetime) -> dict[str, Any]:
    """One round of upkeep; what each part found (or the error it met)."""
    from mailer.jobs import run_due_jobs

    parts: list[tuple[str, Callable[[], Any]]] = [
        ("rates", lambda: check_campaign_rates(rt, now)),
        ("alerts_raised", lambda: scan_alerts(rt, now)),
        ("jobs", lambda: run_due_jobs(rt, now)),
        ("alerts_sent", lambda: alerts.deliver_pending(rt)),
    ]
    found: dict[str, Any] = {}
    for name, part in parts:
        try:
            found[name] = part()
        except Exception as exc:
            _log.exception("upkeep: %s failed", name)
            found[name] = f"error: {type(exc).__name__}: {exc}"
    return found
