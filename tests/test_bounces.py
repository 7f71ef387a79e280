"""Asynchronous bounces and complaints: hand-written DSN and ARF reports, sent over real SMTP to
the VERP address of a real built message, and what they change (or don't)."""

from __future__ import annotations

import datetime as dt
import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from mailer.config import Settings
from mailer.delivery.planning import plan_send_log
from mailer.enums import Category, SendStatus
from mailer.inbound import BounceEvent, InboundServer, apply_events, parse_report
from mailer.inbound.server import MAX_RECIPIENTS, MAX_REPORT_BYTES
from mailer.messages import CampaignInfo, CampaignMessages, SenderIdentity, load_template
from mailer.messages.builder import verp_parts
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.models import AuditEvent, Campaign, Contact, OptOut, Send, Suppression
from mailer.outgoing import OutgoingMessage
from mailer.runtime import Runtime
from mailer.tokens import TokenSigner
from mailer.transports.capture import free_port

SENT_AT = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
#: The feedback loop these tests configure; complaints from anyone else are not believed.
FBL_SENDER = "fbl@feedback.isp.example"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_(feedback_loop_senders=("feedback.isp.example",))


@pytest.fixture
def inbound(rt: Runtime) -> Iterator[InboundServer]:
    server = InboundServer(rt, port=free_port()).start()
    yield server
    server.stop()


def _mailed(rt: Runtime, contact: Contact) -> OutgoingMessage:
    """A promotion logged as sent to `contact`, and the message it was, built for real."""
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name="Open enrollment", category="promotions", template="x", created_by="ada"
        )
        s.add(campaign)
        s.flush()
        send = Send(
            campaign_id=campaign.id,
            contact_id=contact.id,
            organization_id=contact.organization_id,
            category="promotions",
            email=contact.email,
            status=SendStatus.SENT.value,
            attempts=1,
            sent_at=SENT_AT,
        )
        s.add(send)
        s.flush()
        campaign_id, send_id = campaign.id, send.id
    messages = CampaignMessages(
        rt.settings,
        template=load_template(rt.settings, "promotions/open-enrollment"),
        campaign=CampaignInfo(id=campaign_id, name="x", category=Category.PROMOTIONS),
        sender=SenderIdentity("CPI", "news@cpi.example"),
    )
    built = messages.build(
        replace(SAMPLE_RECIPIENT, send_id=send_id, contact_id=contact.id, email=contact.email)
    )
    with rt.sessions.begin() as s:
        s.get_one(Send, send_id).message_id = built.message_id
    return built


def _report(
    report_type: str,
    status_part: str,
    third_part: str,
    *,
    to: str,
    sender: str = "MAILER-DAEMON@mx.client.example",
) -> bytes:
    text = (
        f"From: {sender}\r\n"
        f"To: {to}\r\n"
        "Subject: Report\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="RB"\r\n'
        "\r\n"
        "--RB\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "This is a report about a message you sent.\r\n"
        "--RB\r\n" + status_part + "--RB\r\n" + third_part + "--RB--\r\n"
    )
    return text.encode()


def dsn(
    original: OutgoingMessage,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <pat>: Recipient address rejected: User unknown",
    message_id: str | None = None,
) -> bytes:
    """A Postfix-like DSN about `original`, quoting its headers (text/rfc822-headers)."""
    blocks = (
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.client.example\r\n"
        "Arrival-Date: Fri, 20 Nov 2026 09:00:01 +0000\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {original.rcpt}\r\n"
        f"Original-Recipient: rfc822;{original.rcpt}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx2.client.example\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
        "\r\n"
    )
    headers = (
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"Message-ID: {message_id if message_id is not None else original.message_id}\r\n"
        "From: CPI <news@cpi.example>\r\n"
        "Subject: Open enrollment\r\n"
        "\r\n"
    )
    return _report("delivery-status", blocks, headers, to=original.mail_from)


def arf(
    original: OutgoingMessage,
    *,
    feedback_type: str = "abuse",
    to: str = "",
    sender: str = FBL_SENDER,
) -> bytes:
    """A feedback-loop complaint about `original`, quoting the whole message (message/rfc822),
    with the recipient redacted as ISPs often do."""
    feedback = (
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        f"Feedback-Type: {feedback_type}\r\n"
        "User-Agent: ExampleFBL/1.0\r\n"
        "Version: 1\r\n"
        "Original-Rcpt-To: redacted@client.example\r\n"
        "Source-IP: 192.0.2.1\r\n"
        "\r\n"
    )
    quoted = "Content-Type: message/rfc822\r\n\r\n" + original.data.decode() + "\r\n"
    return _report("feedback-report", feedback, quoted, to=to or original.mail_from, sender=sender)


def _deliver(server: InboundServer, rcpt: str, data: bytes) -> tuple[int, bytes]:
    """Send `data` from the null sender, as an MTA sends a report; the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
        client.ehlo("mx.client.example")
        client.mail("<>")
        code, _ = client.rcpt(rcpt)
        assert code == 250
        return client.data(data)


def _state(rt: Runtime, send_id: int) -> dict[str, Any]:
    with rt.sessions() as s:
        send = s.get_one(Send, send_id)
        return {
            "send": (send.status, send.smtp_reply, send.sent_at),
            "suppressions": [(r.address, r.reason) for r in s.scalars(select(Suppression))],
            "opt_outs": sorted((r.category, r.source) for r in s.scalars(select(OptOut))),
            "audit": [
                e.action
                for e in s.scalars(select(AuditEvent).where(AuditEvent.actor == "bounce-processor"))
            ],
        }


def _plan(rt: Runtime, category: Category, contact: Contact) -> tuple[str, str]:
    """Plan a campaign of `category` to everybody; the (status, skip reason) of `contact`."""
    now = dt.datetime.now(dt.UTC)
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name=f"next {category}", category=category, template="x", created_by="ada"
        )
        s.add(campaign)
        s.flush()
        plan_send_log(rt, s, campaign, "", now=now)
        send = s.scalars(
            select(Send).where(Send.campaign_id == campaign.id, Send.contact_id == contact.id)
        ).one()
        return send.status, send.skip_reason


# ---- parsing ----------------------------------------------------------------------------


def test_a_dsn_gives_one_event_per_failed_or_delayed_recipient(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    original = _mailed(rt, make_contact())
    data = dsn(original).replace(
        b"\r\n--RB\r\nContent-Type: text/rfc822-headers",
        b"Final-Recipient: rfc822; other@client.example\r\nAction: delivered\r\n"
        b"Status: 2.0.0\r\n\r\n"
        b"Final-Recipient: rfc822; third@client.example\r\nAction: delayed\r\n"
        b"Status: 4.4.1\r\n"
        b"\r\n--RB\r\nContent-Type: text/rfc822-headers",
    )
    assert parse_report(data) == [
        BounceEvent(
            kind="failed",
            recipient=original.rcpt,
            status="5.1.1",
            diagnostic="smtp; 550 5.1.1 <pat>: Recipient address rejected: User unknown",
            message_id=original.message_id,
            reporter="mailer-daemon@mx.client.example",
        ),
        BounceEvent(
            kind="delayed",
            recipient="third@client.example",
            status="4.4.1",
            message_id=original.message_id,
            reporter="mailer-daemon@mx.client.example",
        ),
    ]


def test_an_arf_report_gives_a_complaint_with_the_original_message_id(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    original = _mailed(rt, make_contact())
    [event] = parse_report(arf(original))
    assert event == BounceEvent(
        kind="complaint",
        recipient="redacted@client.example",
        feedback_type="abuse",
        message_id=original.message_id,
        reporter=FBL_SENDER,
    )


def test_mail_that_is_no_report_gives_no_events() -> None:
    assert parse_report(b"Subject: out of office\r\n\r\nI am away.\r\n") == []
    assert parse_report(b"") == []
    other = b'Content-Type: multipart/report; report-type=disposition-notification; boundary="x"'
    assert parse_report(other + b"\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n") == []


@given(st.binary(max_size=2000))
def test_any_bytes_parse_without_raising(data: bytes) -> None:
    report = b'Content-Type: multipart/report; report-type=delivery-status; boundary="RB"\r\n\r\n'
    assert isinstance(parse_report(data), list)
    assert isinstance(parse_report(report + data), list)


# ---- effects, over real SMTP ------------------------------------------------------------


def test_a_hard_bounce_suppresses_the_address_and_fails_the_send(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    assert original.mail_from.startswith("bounces+")
    code, _ = _deliver(inbound, original.mail_from, dsn(original))
    assert code == 250
    state = _state(rt, original.send_id)
    status, reply, sent_at = state["send"]
    assert status == "failed" and "5.1.1" in reply and "User unknown" in reply
    assert sent_at == SENT_AT
    assert state["suppressions"] == [(contact.email, "hard_bounce")]
    assert state["opt_outs"] == [] and state["audit"] == ["bounce.hard"]
    # the next campaign, of any category, skips the contact
    assert _plan(rt, Category.PROMOTIONS, contact) == ("skipped", "suppressed")
    assert _plan(rt, Category.POLICY, contact) == ("skipped", "suppressed")


def test_a_complaint_stops_marketing_and_service_but_not_policy_notices(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    code, _ = _deliver(inbound, original.mail_from, arf(original))
    assert code == 250
    state = _state(rt, original.send_id)
    assert state["opt_outs"] == [("all_marketing", "complaint"), ("service", "complaint")]
    assert state["suppressions"] == []  # a suppression would stop the mandatory notices too
    assert state["send"][0] == "sent"
    assert state["audit"] == ["consent.opt_out", "consent.opt_out", "bounce.complaint"]
    assert _plan(rt, Category.PROMOTIONS, contact) == ("skipped", "opted_out")
    assert _plan(rt, Category.FEATURES, contact) == ("skipped", "opted_out")
    assert _plan(rt, Category.SERVICE, contact) == ("skipped", "opted_out")
    assert _plan(rt, Category.POLICY, contact) == ("queued", "")


def test_a_forged_verp_token_is_refused_at_rcpt_and_changes_nothing(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    local, _, domain = original.mail_from.partition("@")
    forged = f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"
    before = _state(rt, original.send_id)
    with smtplib.SMTP("127.0.0.1", inbound.port, timeout=5) as client:
        client.ehlo("mx.client.example")
        client.mail("<>")
        code, reply = client.rcpt(forged)
        assert code == 550 and b"bounce" in reply
        assert client.rcpt("bounces+1-0123456789abcdef0123@cpi.example")[0] == 550
        assert client.rcpt(original.mail_from)[0] == 250
    assert _state(rt, original.send_id) == before


def test_a_report_with_too_many_recipients_is_refused_at_rcpt(
    rt: Runtime, inbound: InboundServer
) -> None:
    signer = TokenSigner(rt.settings)
    prefix, suffix = verp_parts(rt.settings.envelope_sender)
    with smtplib.SMTP("127.0.0.1", inbound.port, timeout=5) as client:
        client.ehlo("mx.client.example")
        client.mail("<>")
        codes = [
            client.rcpt(f"{prefix}{signer.make_bounce(n)}{suffix}")[0]
            for n in range(1, MAX_RECIPIENTS + 3)
        ]
    assert codes == [250] * MAX_RECIPIENTS + [452, 452]


def test_a_costly_report_to_many_recipients_does_not_stall_other_connections(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    # Given a report near the size limit made of tiny MIME parts (the costliest to parse),
    # to as many genuine VERP addresses as allowed
    original = _mailed(rt, make_contact())
    signer = TokenSigner(rt.settings)
    prefix, suffix = verp_parts(rt.settings.envelope_sender)
    tiny = b"--RB\r\nContent-Type: text/plain\r\n\r\nx\r\n" * (MAX_REPORT_BYTES // 40)
    report = dsn(original).replace(b"--RB--", tiny + b"--RB--")
    assert len(report) < MAX_REPORT_BYTES
    rcpts = [f"{prefix}{signer.make_bounce(n)}{suffix}" for n in range(1, MAX_RECIPIENTS + 1)]
    replies: list[tuple[int, bytes]] = []

    def send_report() -> None:
        with smtplib.SMTP("127.0.0.1", inbound.port, timeout=120) as client:
            client.ehlo("mx.client.example")
            client.mail("<>")
            for rcpt in rcpts:
                client.rcpt(rcpt)
            replies.append(client.data(report))

    # When it is being sent and processed, another sender keeps asking
    worker = threading.Thread(target=send_report, daemon=True)
    started = time.monotonic()
    worker.start()
    slowest_s = 0.0
    with smtplib.SMTP("127.0.0.1", inbound.port, timeout=120) as other:
        while worker.is_alive() and time.monotonic() - started < 15:
            asked = time.monotonic()
            other.noop()
            slowest_s = max(slowest_s, time.monotonic() - asked)
            time.sleep(0.05)
    worker.join(120)
    # Then the other connection is always answered at once, and the report handled in seconds
    assert slowest_s < 1.0
    assert replies and replies[0][0] == 250
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "audited"),
    [
        ("delayed", "4.4.1", "smtp; 451 4.4.1 connection timed out", "bounce.delayed"),
        ("failed", "5.7.1", "smtp; 550 5.7.1 Message rejected as spam", "bounce.policy"),
        ("failed", "5.7.26", "smtp; 550 5.7.26 unauthenticated mail", "bounce.policy"),
        ("failed", "5.2.2", "smtp; 552 5.2.2 Mailbox full", "bounce.soft"),
        ("failed", "4.4.7", "", "bounce.soft"),
    ],
)
def test_delays_soft_failures_and_our_own_policy_defects_change_nothing_but_the_audit(
    rt: Runtime,
    inbound: InboundServer,
    make_contact: Callable[..., Contact],
    action: str,
    status: str,
    diagnostic: str,
    audited: str,
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    before = _state(rt, original.send_id)
    report = dsn(original, action=action, status=status, diagnostic=diagnostic)
    assert _deliver(inbound, original.mail_from, report)[0] == 250
    after = _state(rt, original.send_id)
    assert after == {**before, "audit": [audited]}
    assert _plan(rt, Category.PROMOTIONS, contact) == ("queued", "")


def test_a_report_to_the_bare_bounce_address_is_matched_by_its_message_id(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    bare = rt.settings.envelope_sender
    forged_id = original.message_id.replace(".", ".9", 1)
    soft = dsn(original, status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
    assert _deliver(inbound, bare, dsn(original, message_id=forged_id))[0] == 250
    assert _state(rt, original.send_id)["audit"] == []
    assert _deliver(inbound, bare, soft)[0] == 250
    assert _state(rt, original.send_id)["audit"] == ["bounce.soft"]


def test_a_hard_bounce_quoting_a_genuine_message_id_at_the_bare_address_suppresses_nobody(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    # Given someone who saw the message (a forward, an archive) and knows its Message-ID
    contact = make_contact()
    original = _mailed(rt, contact)
    before = _state(rt, original.send_id)
    # When they send a hard bounce about it to the bare bounce address
    assert _deliver(inbound, rt.settings.envelope_sender, dsn(original))[0] == 250
    # Then nothing changes: hard bounces count only at the VERP address, which only the
    # receiving server saw
    assert _state(rt, original.send_id) == before
    assert _plan(rt, Category.POLICY, contact) == ("queued", "")


def test_a_report_at_the_bare_address_about_another_recipient_is_ignored(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    original = _mailed(rt, make_contact())
    other = replace(original, rcpt="someone.else@client.example")
    report = dsn(other, status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
    [applied] = apply_events(rt, parse_report(report), envelope_rcpt=rt.settings.envelope_sender)
    assert applied.action == "ignored" and "recipient" in applied.reason
    assert _state(rt, original.send_id)["audit"] == []


@pytest.mark.parametrize("to_verp", [True, False])
def test_a_complaint_from_anyone_but_a_configured_feedback_loop_changes_nothing(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact], to_verp: bool
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    before = _state(rt, original.send_id)
    rcpt = original.mail_from if to_verp else rt.settings.envelope_sender
    for sender in ("mallory@attacker.example", "fbl@feedback.isp.example.attacker.example"):
        assert _deliver(inbound, rcpt, arf(original, sender=sender))[0] == 250
    assert _state(rt, original.send_id) == before
    assert _plan(rt, Category.PROMOTIONS, contact) == ("queued", "")


def test_a_complaint_from_the_feedback_loop_at_the_bare_address_opts_out(
    rt: Runtime, inbound: InboundServer, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    assert _deliver(inbound, rt.settings.envelope_sender, arf(original))[0] == 250
    assert _state(rt, original.send_id)["opt_outs"] == [
        ("all_marketing", "complaint"),
        ("service", "complaint"),
    ]


def test_a_bounce_of_a_send_that_already_failed_keeps_its_reason(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    contact = make_contact()
    original = _mailed(rt, contact)
    with rt.sessions.begin() as s:
        send = s.get_one(Send, original.send_id)
        send.status, send.smtp_reply = "failed", "5.1.1 refused at once"
    [applied] = apply_events(rt, parse_report(dsn(original)), envelope_rcpt=original.mail_from)
    assert applied.action == "bounce.hard" and applied.send_id == original.send_id
    state = _state(rt, original.send_id)
    assert state["send"][:2] == ("failed", "5.1.1 refused at once")
    assert state["suppressions"] == [(contact.email, "hard_bounce")]


def test_a_not_spam_report_is_audited_and_opts_nobody_out(
    rt: Runtime, make_contact: Callable[..., Contact]
) -> None:
    original = _mailed(rt, make_contact())
    events = parse_report(arf(original, feedback_type="not-spam"))
    [applied] = apply_events(rt, events, envelope_rcpt=original.mail_from)
    assert applied.action == "bounce.feedback"
    assert _state(rt, original.send_id)["opt_outs"] == []


def test_mail_for_another_address_of_the_bounce_domain_is_refused(
    rt: Runtime, inbound: InboundServer
) -> None:
    with smtplib.SMTP("127.0.0.1", inbound.port, timeout=5) as client:
        client.ehlo("mx.client.example")
        client.mail("<>")
        for rcpt in (
            "bounce+x@cpi.example",
            "bounces+a!b@cpi.example",
            "bounces+1-2@other.example",
        ):
            assert client.rcpt(rcpt)[0] == 550
