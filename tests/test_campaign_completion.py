"""Campaigns complete without a babysitter: whoever records the last outstanding send completes
the campaign; pause, resume and cancel settle by themselves. Real Redis worker threads, a real
SMTP server, and no scheduler sweep anywhere in these tests."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from mailer import campaigns, policy
from mailer.campaigns.lifecycle import complete_if_done
from mailer.models import AuditEvent, Campaign, Send
from mailer.runtime import Runtime
from tests.conftest import ROOT
from tests.delivery_fixtures import as_user
from tests.smtpd import FaultServer

MARKETING_TEMPLATE = "features/benefitelect-enrollment-site"


def _create(rt: Runtime, username: str, **kw: Any) -> int:
    values: dict[str, Any] = {"category": "features", "template": MARKETING_TEMPLATE}
    values.update(kw)
    return campaigns.create_campaign(
        rt, actor=as_user(rt, username), name="Test campaign", **values
    ).id


def _wait_status(rt: Runtime, campaign_id: int, *wanted: str, timeout_s: float = 60) -> str:
    """Poll the campaign's status (never sweeping) until it is one of `wanted`."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = campaigns.campaign_status(rt, campaign_id).status
        if status in wanted:
            return status
        if time.monotonic() > deadline:
            counts = campaigns.campaign_status(rt, campaign_id).counts
            raise AssertionError(f"campaign {campaign_id} still {status} ({counts})")
        time.sleep(0.05)


def _completions(rt: Runtime, campaign_id: int) -> int:
    with rt.sessions() as s:
        return s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "campaign.complete")
            .where(AuditEvent.object_id == str(campaign_id))
        )


def _received(server: FaultServer) -> Counter[str]:
    return Counter(rcpt for m in server.messages for rcpt in m.rcpt_tos)


def test_a_promotion_a_service_notice_and_a_policy_notice_complete_with_no_scheduler(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    # Given clients of Amy's, and Redis workers but no scheduler
    contacts = make_audience(45, account_manager_id=people["manager"].id)
    promo = _create(mail_rt, "mark")
    notice = _create(mail_rt, "amy", category="service", template="service/planned-maintenance")

    # When a promotion, a service notice and a policy notice are launched
    campaigns.launch_campaign(
        mail_rt, promo, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    campaigns.launch_campaign(
        mail_rt, notice, actor=as_user(mail_rt, "amy"), dispatch=workers.dispatch
    )
    text = (ROOT / "mailer" / "data" / "privacy-policy-1.txt").read_text() + "\nMore.\n"
    report = policy.publish_policy(
        mail_rt,
        version="2",
        effective_on=dt.date(2027, 1, 1),
        text=text,
        summary="A change.\n- One thing.\n",
        is_material=True,
        actor=as_user(mail_rt, "ada"),
        dispatch=workers.dispatch,
    )
    assert report.campaign_id is not None

    # Then each completes once its last send is recorded, exactly once, every contact told once
    for cid in (promo, notice, report.campaign_id):
        assert _wait_status(mail_rt, cid, "completed") == "completed"
        assert campaigns.campaign_status(mail_rt, cid).counts == {"sent": len(contacts)}
        assert _completions(mail_rt, cid) == 1
    assert _received(smtp_server) == Counter({c.email: 3 for c in contacts})
    assert policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada")).is_finished


def test_a_promotion_paused_and_resumed_completes_with_no_scheduler(
    mail_rt, people, make_audience, smtp_server
) -> None:
    from workers.embedded import EmbeddedWorkers

    slow = mail_rt.settings.with_(rate_limit_per_s=40)
    rt = Runtime(slow, mail_rt.engine, mail_rt.sessions)
    contacts = make_audience(60)
    cid = _create(rt, "mark")
    with EmbeddedWorkers(slow, rt, threads=2) as embedded:
        campaigns.launch_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=embedded.dispatch)
        _wait_until(lambda: campaigns.campaign_status(rt, cid).counts.get("sent", 0) >= 10)

        # When it is paused mid-flight, and resumed once the workers have let go
        campaigns.pause_campaign(rt, cid, actor=as_user(rt, "mark"))
        _wait_until(lambda: "sending" not in campaigns.campaign_status(rt, cid).counts)
        assert campaigns.campaign_status(rt, cid).status == "paused"
        campaigns.resume_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=embedded.dispatch)

        # Then it completes by itself, nobody sent twice
        assert _wait_status(rt, cid, "completed") == "completed"
    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})
    assert _completions(rt, cid) == 1


def test_resuming_a_campaign_with_nothing_left_completes_it_at_once(
    mail_rt, people, make_audience
) -> None:
    make_audience(3)
    cid = _create(mail_rt, "mark")
    held: list[Any] = []
    campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=held.extend)
    campaigns.pause_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"))
    with mail_rt.sessions.begin() as s:  # the last sends were recorded while it was paused
        s.execute(update(Send).where(Send.campaign_id == cid).values(status="sent"))

    campaigns.resume_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=held.extend)

    summary = campaigns.campaign_status(mail_rt, cid)
    assert (summary.status, summary.completed_at is not None) == ("completed", True)


def test_cancel_settles_queued_and_deferred_sends_at_once(mail_rt, people, make_audience) -> None:
    make_audience(4)
    cid = _create(mail_rt, "mark")
    campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=None)
    with mail_rt.sessions.begin() as s:
        first = s.scalar(select(func.min(Send.id)).where(Send.campaign_id == cid))
        s.execute(update(Send).where(Send.id == first).values(status="deferred"))

    campaigns.cancel_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"))

    summary = campaigns.campaign_status(mail_rt, cid)
    assert summary.status == "cancelled" and summary.counts == {"skipped": 4}
    assert summary.skip_reasons == {"cancelled": 4}


def test_a_campaign_with_nobody_to_send_to_completes_at_launch(mail_rt, people) -> None:
    cid = _create(mail_rt, "mark")
    summary = campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=None)
    assert (summary.status, summary.status_detail) == ("completed", "nobody to send to")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_recording_the_last_sends_at_once_complete_the_campaign_exactly_once(
    rt,
) -> None:
    for _ in range(15):
        cid, completed = _race_to_complete(rt)
        assert sorted(completed) == [False, True]
        assert _completions(rt, cid) == 1
        with rt.sessions() as s:
            assert s.get(Campaign, cid).status == "completed"


def _race_to_complete(rt: Runtime) -> tuple[int, list[bool]]:
    """Two workers, each on its own connection, record the campaign's last two sends at once."""
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name="race", category="features", template="t", created_by="ada", status="sending"
        )
        s.add(campaign)
        s.flush()
        sends = [
            Send(campaign_id=campaign.id, category="features", email=email, status="sending")
            for email in ("one@x.test", "two@x.test")
        ]
        s.add_all(sends)
        s.flush()
        cid, ids = campaign.id, [send.id for send in sends]
    recorded, checked = threading.Barrier(2), threading.Barrier(2)
    completed: list[bool] = []

    def worker(send_id: int) -> None:
        with rt.sessions() as s:
            s.execute(update(Send).where(Send.id == send_id).values(status="sent"))
            recorded.wait()  # both have written, neither has committed
            s.commit()
            checked.wait()  # both committed: both look at once
            completed.append(complete_if_done(s, cid))
            s.commit()

    threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return cid, completed


def test_status_watch_returns_when_the_campaign_completes_with_no_scheduler(
    mail_rt, workers, people, make_audience, tmp_path
) -> None:
    from mailer.cli import main

    make_audience(25)
    cid = _create(mail_rt, "mark")
    settings = mail_rt.settings
    env = {
        "MAILER_DATABASE_URL": settings.database_url,
        "MAILER_SECRET_KEY": settings.secret_key.reveal(),
        "MAILER_BROKER_URL": settings.broker_url,
        "MAILER_BROKER_NAMESPACE": settings.broker_namespace,
        "MAILER_SMTP_URL": settings.smtp_url,
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_USER": "mark",
    }
    runner = CliRunner()
    launched = runner.invoke(main, ["campaign", "launch", str(cid), "--json"], env=env)
    assert launched.exit_code == 0, launched.output

    watched = _in_thread(
        lambda: runner.invoke(main, ["campaign", "status", str(cid), "--watch", "--json"], env=env)
    )
    assert watched.exit_code == 0, watched.output
    status = json.loads(watched.output)
    assert (status["status"], status["counts"]) == ("completed", {"sent": 25})


def _in_thread(call: Any, timeout_s: float = 60) -> Any:
    """Run `call` and give up on it (failing the test) after `timeout_s`."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert result, f"still running after {timeout_s} s"
    return result[0]


def _wait_until(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
