"""Operator alerts: raised once per cause, delivered by mail (a real SMTP server) and as a JSON
POST (a real HTTP server), retried when a destination fails (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
from email import message_from_bytes

import pytest
from sqlalchemy import insert, select

from mailer import alerts
from mailer.access import Actor
from mailer.campaigns.lifecycle import SYSTEM, transition
from mailer.enums import CampaignStatus, Role
from mailer.models import Alert, Campaign, Heartbeat, Send, utcnow
from mailer.runtime import Runtime
from mailer.upkeep import run_upkeep, watch_scheduler
from tests.http_fixtures import HttpServer
from tests.smtpd import FaultServer

NOW = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)


@pytest.fixture
def alert_rt(rt: Runtime, smtp_server: FaultServer, http_server: HttpServer) -> Runtime:
    settings = rt.settings.with_(
        smtp_url=smtp_server.url + "?timeout_s=5",
        alert_email="ops@cpi.example",
        alert_webhook_url=http_server.url + "/hooks/mailer",
        retention_at="",
    )
    return Runtime(settings, rt.engine, rt.sessions)


def _campaign(rt: Runtime, status: str = "sending") -> int:
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name="Winter promo", category="promotions", template="x", created_by="t", status=status
        )
        s.add(campaign)
        s.flush()
        return campaign.id


def _posted(http_server: HttpServer) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in http_server.requests if r.method == "POST"]


def test_a_campaign_that_paused_itself_is_alerted_once_by_mail_and_webhook(
    alert_rt: Runtime, smtp_server: FaultServer, http_server: HttpServer
) -> None:
    campaign_id = _campaign(alert_rt)
    with alert_rt.sessions.begin() as s:
        transition(
            s,
            campaign_id,
            CampaignStatus.PAUSED,
            actor=SYSTEM,
            action="pause",
            detail="paused after 50 sender-side rejections",
        )
    for _ in range(3):  # the scheduler's upkeep, three rounds: one cause, one alert
        run_upkeep(alert_rt, utcnow())
    (posted,) = _posted(http_server)
    assert posted["kind"] == "campaign-paused"
    assert posted["subject"] == f"campaign {campaign_id} (Winter promo) paused itself"
    assert "50 sender-side rejections" in str(posted["body"])
    (mail,) = smtp_server.received_for("ops@cpi.example")
    parsed = message_from_bytes(mail.data)
    assert (
        parsed["Subject"] == f"[mailer alert] campaign {campaign_id} (Winter promo) paused itself"
    )
    assert parsed["Auto-Submitted"] == "auto-generated"
    with alert_rt.sessions() as s:
        (alert,) = s.scalars(select(Alert)).all()
        assert alert.sent_at is not None and alert.attempts == 1 and alert.last_error == ""


def test_a_pause_by_a_person_raises_no_alert(alert_rt: Runtime, http_server: HttpServer) -> None:
    campaign_id = _campaign(alert_rt)
    with alert_rt.sessions.begin() as s:
        ada = Actor(user_id=None, username="ada", role=Role.MARKETING, via="cli")
        transition(s, campaign_id, CampaignStatus.PAUSED, actor=ada, action="pause")
    run_upkeep(alert_rt, utcnow())
    assert _posted(http_server) == []


def test_a_burst_of_5_7_x_rejections_is_one_alert(
    alert_rt: Runtime, http_server: HttpServer
) -> None:
    campaign_id = _campaign(alert_rt)
    rows = [
        {
            "campaign_id": campaign_id,
            "category": "promotions",
            "email": f"r{n}@x.example",
            "status": "failed",
            "smtp_code": 550,
            "smtp_reply": "5.7.26 unauthenticated mail",
        }
        for n in range(12)
    ]
    with alert_rt.sessions.begin() as s:
        s.execute(insert(Send), rows[:9])
    run_upkeep(alert_rt, utcnow())
    assert _posted(http_server) == []  # 9 < MAILER_ALERT_POLICY_FAILURES (10)
    with alert_rt.sessions.begin() as s:
        s.execute(insert(Send), rows[9:])
    run_upkeep(alert_rt, utcnow())
    run_upkeep(alert_rt, utcnow())
    (posted,) = _posted(http_server)
    assert posted["kind"] == "policy-burst"
    assert "11 5.7.x rejections" in str(posted["subject"]) or "12 5.7.x" in str(posted["subject"])


def test_a_silent_scheduler_is_alerted_by_a_worker_once_per_silence(
    alert_rt: Runtime, http_server: HttpServer
) -> None:
    started = NOW - dt.timedelta(minutes=30)
    with alert_rt.sessions.begin() as s:
        s.add(
            Heartbeat(
                name="scheduler:h:1",
                kind="scheduler",
                host="h",
                pid=1,
                started_at=started,
                seen_at=NOW - dt.timedelta(minutes=4),
            )
        )
    watch_scheduler(alert_rt, started, NOW)
    assert _posted(http_server) == []  # four minutes: not yet
    watch_scheduler(alert_rt, started, NOW + dt.timedelta(minutes=2))
    watch_scheduler(alert_rt, started, NOW + dt.timedelta(minutes=3))
    (posted,) = _posted(http_server)
    assert posted["kind"] == "scheduler-silent"
    assert posted["subject"] == "no scheduler has swept since 2026-11-30T00:56:00Z"
    # it sweeps again, then falls silent again: a new cause, a new alert
    with alert_rt.sessions.begin() as s:
        s.get_one(Heartbeat, "scheduler:h:1").seen_at = NOW + dt.timedelta(minutes=10)
    watch_scheduler(alert_rt, started, NOW + dt.timedelta(minutes=20))
    assert len(_posted(http_server)) == 2


def test_an_alert_that_could_not_be_delivered_is_tried_again(
    alert_rt: Runtime, smtp_server: FaultServer, http_server: HttpServer
) -> None:
    http_server.post_status = 503
    with alert_rt.sessions.begin() as s:
        alerts.raise_alert(s, key="test:1", kind="test", subject="something broke", body="b")
    assert alerts.deliver_pending(alert_rt) == 0
    with alert_rt.sessions() as s:
        alert = s.scalars(select(Alert)).one()
        assert alert.sent_at is None and alert.attempts == 1
        assert "HTTP Error 503" in alert.last_error
    http_server.post_status = 200
    assert alerts.deliver_pending(alert_rt) == 1
    assert alerts.deliver_pending(alert_rt) == 0
    # the mail went both times (the webhook failed the first): an operator may get it twice,
    # never zero times
    assert len(smtp_server.received_for("ops@cpi.example")) == 2
