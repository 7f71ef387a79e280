"""Soft bounces counted per address, and campaigns that pause themselves on their complaint or
hard-bounce rate (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import insert, select

from mailer.access import SYSTEM, Actor
from mailer.deliverability import (
    campaign_rates,
    check_rates,
    lift_marketing_suppression,
    marketing_suppressions,
    note_delivered,
    note_soft_bounce,
)
from mailer.deliverability.events import record_event
from mailer.delivery.results import Claimed, record_results
from mailer.enums import CampaignStatus, Role, SendStatus
from mailer.errors import PermissionDeniedError
from mailer.inbound import apply_events, parse_report
from mailer.models import Alert, AuditEvent, Campaign, Contact, OptOut, Send, SoftBounce
from mailer.outgoing import DeliveryResult, Outcome, ReplyKind
from mailer.runtime import Runtime
from tests.test_bounces import _mailed, dsn

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _bounce(rt: Runtime, contact: Contact, at: dt.datetime, send_id: int) -> bool:
    with rt.sessions.begin() as s:
        return note_soft_bounce(
            s,
            rt.settings,
            email=contact.email,
            address_hash=rt.hash_address(contact.email),
            send_id=send_id,
            detail="4.2.2 mailbox full",
            now=at,
        )


def _marketing_stopped(rt: Runtime, contact: Contact) -> bool:
    with rt.sessions() as s:
        return (
            s.scalar(
                select(OptOut.id).where(
                    OptOut.address_hash == rt.hash_address(contact.email),
                    OptOut.source == "soft_bounce",
                    OptOut.revoked_at.is_(None),
                )
            )
            is not None
        )


def test_three_soft_bounces_over_seven_days_stop_marketing_with_the_reason(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    assert not _bounce(rt, contact, T0, 1)
    assert not _bounce(rt, contact, T0 + 3 * DAY, 2)
    # three, but within six days: not yet
    assert not _bounce(rt, contact, T0 + 6 * DAY, 3)
    assert not _marketing_stopped(rt, contact)
    assert _bounce(rt, contact, T0 + 8 * DAY, 4)
    assert _marketing_stopped(rt, contact)
    with rt.sessions() as s:
        (shown,) = marketing_suppressions(s)
        assert shown.email == contact.email
        assert "4 soft bounces from 2026-11-01 to 2026-11-09" in shown.reason
        assert "4.2.2 mailbox full" in shown.reason
        assert s.scalar(select(AuditEvent.action).where(AuditEvent.action.like("suppression.%")))


def test_a_delivery_in_between_starts_the_count_again(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    _bounce(rt, contact, T0, 1)
    _bounce(rt, contact, T0 + 4 * DAY, 2)
    with rt.sessions.begin() as s:
        assert note_delivered(s, [(contact.email, 3)], T0 + 5 * DAY, rt.hash_address) == 1
    assert not _bounce(rt, contact, T0 + 9 * DAY, 4)
    with rt.sessions() as s:
        row = s.get_one(SoftBounce, rt.hash_address(contact.email))
        assert (row.count, row.first_at) == (1, T0 + 9 * DAY)


def test_the_acceptance_of_the_bouncing_message_itself_is_no_delivery(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    # a relay accepts a message, then reports it soft-bounced: the acceptance proves nothing
    contact = make_contact()
    _bounce(rt, contact, T0, 1)
    with rt.sessions.begin() as s:
        note_delivered(s, [(contact.email, 2)], T0 + DAY, rt.hash_address)
    _bounce(rt, contact, T0 + 4 * DAY, 2)
    assert _bounce(rt, contact, T0 + 8 * DAY, 3)


def test_the_same_send_reported_twice_counts_once(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    _bounce(rt, contact, T0, 7)
    _bounce(rt, contact, T0 + DAY, 7)
    with rt.sessions() as s:
        assert s.get_one(SoftBounce, rt.hash_address(contact.email)).count == 1


def test_a_delayed_dsn_with_a_4xx_status_counts_as_a_soft_bounce(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    for _ in range(2):
        original = _mailed(rt, contact)
        report = dsn(original, action="delayed", status="4.2.2", diagnostic="smtp; 452 4.2.2 full")
        (applied,) = apply_events(rt, parse_report(report), envelope_rcpt=original.mail_from)
        assert applied.action == "bounce.delayed"
    with rt.sessions() as s:
        assert s.get_one(SoftBounce, rt.hash_address(contact.email)).count == 2


def test_a_4xx_still_refused_after_the_last_retry_counts_and_a_delivery_resets(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact, other = make_contact(), make_contact()
    _bounce(rt, other, T0, 99)
    with rt.sessions.begin() as s:
        campaign = Campaign(name="c", category="promotions", template="x", created_by="t")
        s.add(campaign)
        s.flush()
        sends = [
            Send(
                campaign_id=campaign.id,
                contact_id=c.id,
                category="promotions",
                email=c.email,
                status="sending",
                attempts=3,
                first_attempt_at=T0,
            )
            for c in (contact, other)
        ]
        s.add_all(sends)
        s.flush()
        claimed = {x.id: Claimed(3, T0, x.email) for x in sends}
        results = [
            DeliveryResult(sends[0].id, Outcome.DEFERRED, ReplyKind.SOFT, 452, "4.2.2", "full"),
            DeliveryResult(sends[1].id, Outcome.SENT, ReplyKind.OK, 250, "2.0.0", "ok"),
        ]
        # given up: the first attempt was five days ago
        record_results(s, rt.settings, results, claimed, {}, T0 + 5 * DAY, rt.hash_address)
    with rt.sessions() as s:
        assert s.get_one(SoftBounce, rt.hash_address(contact.email)).count == 1
        assert s.get_one(SoftBounce, rt.hash_address(other.email)).delivered_at is not None


def test_only_an_admin_lifts_a_soft_bounce_stop_and_the_count_restarts(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    for day in (0, 4, 8):
        _bounce(rt, contact, T0 + day * DAY, day)
    marketer = Actor(user_id=None, username="mia", role=Role.MARKETING, via="cli")
    with pytest.raises(PermissionDeniedError), rt.sessions.begin() as s:
        lift_marketing_suppression(s, marketer, address_hash=rt.hash_address(contact.email))
    assert _marketing_stopped(rt, contact)
    with rt.sessions.begin() as s:
        lifted = lift_marketing_suppression(
            s, SYSTEM, address_hash=rt.hash_address(contact.email), note="mailbox fixed"
        )
    assert lifted == 1
    assert not _marketing_stopped(rt, contact)
    with rt.sessions() as s:
        assert s.get(SoftBounce, rt.hash_address(contact.email)) is None
        assert marketing_suppressions(s) == []


def _campaign_with_sends(rt: Runtime, counts: dict[str, int], **extra: Any) -> int:
    """A sending campaign with many sends made in one statement, by status."""
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name="Spring promo",
            category="promotions",
            template="x",
            created_by="t",
            status=CampaignStatus.SENDING.value,
        )
        s.add(campaign)
        s.flush()
        rows = []
        n = 0
        for status, how_many in counts.items():
            code, reply = {
                "sent": (250, "2.0.0 ok"),
                "hard": (550, "5.1.1 no such user"),
                "policy": (550, "5.7.26 unauthenticated"),
                "queued": (None, ""),
            }[status]
            for _ in range(how_many):
                n += 1
                rows.append(
                    {
                        "campaign_id": campaign.id,
                        "category": "promotions",
                        "email": f"r{n}@x{n % 7}.example",
                        "status": "failed" if status in ("hard", "policy") else status,
                        "smtp_code": code,
                        "smtp_reply": reply,
                        "attempts": 1,
                    }
                )
        s.execute(insert(Send), rows)
        return campaign.id


def _status(rt: Runtime, campaign_id: int) -> tuple[str, str]:
    with rt.sessions() as s:
        c = s.get_one(Campaign, campaign_id)
        return c.status, c.status_detail


def test_complaints_over_the_limit_after_enough_deliveries_pause_the_campaign_once(
    rt: Runtime,
) -> None:
    campaign_id = _campaign_with_sends(rt, {"sent": 1000, "queued": 50})
    with rt.sessions.begin() as s:
        send_ids = list(s.scalars(select(Send.id).where(Send.status == "sent").limit(4)))
        for send_id in send_ids[:3]:
            record_event(
                s,
                source="arf",
                event_key=f"send:{send_id}",
                kind="complaint",
                send_id=send_id,
                campaign_id=campaign_id,
                now=T0,
            )
        # 3 of 1,000 is 0.3%: not over the limit
        assert check_rates(s, rt.settings, campaign_id, T0) == ""
        # the same complaint again (another source) is the same send: still 3
        record_event(
            s,
            source="sendgrid",
            event_key="ev-1",
            kind="complaint",
            send_id=send_ids[0],
            campaign_id=campaign_id,
            now=T0,
        )
        assert campaign_rates(s, campaign_id).complaints == 3
        record_event(
            s,
            source="arf",
            event_key=f"send:{send_ids[3]}",
            kind="complaint",
            send_id=send_ids[3],
            campaign_id=campaign_id,
            now=T0,
        )
        reason = check_rates(s, rt.settings, campaign_id, T0)
    assert "complaint rate 0.40% (4 of 1000 delivered) is over 0.30%" in reason
    status, detail = _status(rt, campaign_id)
    assert status == "paused" and "complaint rate 0.40%" in detail
    with rt.sessions.begin() as s:
        check_rates(s, rt.settings, campaign_id, T0)
        alerts = s.scalars(select(Alert)).all()
        assert [a.key for a in alerts] == [f"complaint-rate:{campaign_id}"]
        pause = s.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.pause")).one()
        assert pause.actor == "system" and pause.details["rate"] == "complaint-rate"


def test_policy_rejections_are_not_hard_bounces_and_five_percent_is_not_over(
    rt: Runtime,
) -> None:
    # 5.7.x are ours, not the list's: they do not count as hard bounces
    campaign_id = _campaign_with_sends(rt, {"sent": 900, "hard": 50, "policy": 50, "queued": 10})
    with rt.sessions.begin() as s:
        rates = campaign_rates(s, campaign_id)
        assert (rates.attempts, rates.hard_bounces) == (1000, 50)
        assert check_rates(s, rt.settings, campaign_id, T0) == ""
    assert _status(rt, campaign_id)[0] == "sending"


def test_hard_bounces_over_five_percent_after_a_thousand_attempts_pause_the_campaign(
    rt: Runtime,
) -> None:
    campaign_id = _campaign_with_sends(rt, {"sent": 940, "hard": 60})
    with rt.sessions.begin() as s:
        reason = check_rates(s, rt.settings, campaign_id, T0)
    assert reason.startswith("hard-bounce rate 6.00% (60 of 1000 attempted) is over 5.00%")
    assert _status(rt, campaign_id)[0] == "paused"


def test_below_the_minimum_volume_no_rate_pauses(rt: Runtime) -> None:
    campaign_id = _campaign_with_sends(rt, {"sent": 500, "hard": 100})
    with rt.sessions.begin() as s:
        assert check_rates(s, rt.settings, campaign_id, T0) == ""
    assert _status(rt, campaign_id)[0] == CampaignStatus.SENDING
    assert SendStatus.SENT == "sent"


def test_suppressions_are_listed_with_their_reason_and_lifted_by_an_admin_on_the_cli(
    rt: Runtime, make_contact: Callable[..., Contact], make_user: Callable[..., Any]
) -> None:
    from click.testing import CliRunner

    from mailer.cli import main
    from tests.conftest import TEST_SECRET

    contact = make_contact()
    for day in (0, 4, 8):
        _bounce(rt, contact, T0 + day * DAY, day)
    make_user(username="ada", role="admin")
    make_user(username="mia", role="marketing")
    env = {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": TEST_SECRET,
        "MAILER_VAR_DIR": str(rt.settings.var_dir),
    }
    runner = CliRunner()
    listed = runner.invoke(main, ["suppressions", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{contact.email}  soft_bounce (marketing) since 2026-11-09: 3 soft bounces" in (
        listed.output
    )
    refused = runner.invoke(main, ["suppressions", "lift", contact.email, "--as", "mia"], env=env)
    assert refused.exit_code == 4 and "suppression.lift needs the role admin" in refused.output
    lifted = runner.invoke(
        main, ["suppressions", "lift", contact.email, "--as", "ada", "--note", "fixed"], env=env
    )
    assert lifted.exit_code == 0, lifted.output
    assert (
        "no suppressed addresses" in runner.invoke(main, ["suppressions", "list"], env=env).output
    )
