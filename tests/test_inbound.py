"""Unsubscribing by mail: the mailto half of List-Unsubscribe, over real SMTP."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from mailer.enums import Category
from mailer.inbound import InboundServer
from mailer.messages import CampaignInfo, CampaignMessages, SenderIdentity, load_template
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.models import OptOut
from mailer.runtime import Runtime
from mailer.transports.capture import free_port


@pytest.fixture
def inbound(rt: Runtime) -> Iterator[InboundServer]:
    server = InboundServer(rt, port=free_port()).start()
    yield server
    server.stop()


def _mailto_subject(rt: Runtime, contact) -> str:  # type: ignore[no-untyped-def]
    """The subject a mail client uses for the mailto URI of a real message's header."""
    messages = CampaignMessages(
        rt.settings,
        template=load_template(rt.settings, "promotions/open-enrollment"),
        campaign=CampaignInfo(id=9, name="x", category=Category.PROMOTIONS),
        sender=SenderIdentity("CPI", "news@cpi.example"),
    )
    built = messages.build(
        replace(SAMPLE_RECIPIENT, send_id=5, contact_id=contact.id, email=contact.email)
    )
    header = re.search(rb"List-Unsubscribe: (.*?)\r\n(?!\s)", built.data, re.S)
    assert header is not None
    mailto = re.search(rb"<mailto:([^?]+)\?subject=([^>]+)>", header.group(1))
    assert mailto is not None and mailto.group(1).decode() == rt.settings.unsubscribe_mailto
    return mailto.group(2).decode()


def _send(server: InboundServer, rcpt: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "pat@client.example"
    message["To"] = rcpt
    message["Subject"] = subject
    message.set_content("Please unsubscribe me.")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
        client.send_message(message)


def _opt_outs(rt: Runtime) -> list[OptOut]:
    with rt.sessions() as s:
        return list(s.scalars(select(OptOut)))


def test_mail_to_the_list_unsubscribe_address_opts_the_contact_out(
    rt: Runtime, inbound: InboundServer, make_contact
) -> None:
    contact = make_contact()
    subject = _mailto_subject(rt, contact)
    _send(inbound, rt.settings.unsubscribe_mailto, subject)
    _send(inbound, rt.settings.unsubscribe_mailto, "Re: " + subject)  # a repeat changes nothing
    [row] = _opt_outs(rt)
    assert (row.contact_id, row.category, row.source, row.send_id) == (
        contact.id,
        "promotions",
        "mailto",
        5,
    )
    assert (row.ip, row.user_agent) == ("127.0.0.1", "mailto")


def test_a_forged_token_is_accepted_politely_and_changes_nothing(
    rt: Runtime, inbound: InboundServer, make_contact
) -> None:
    contact = make_contact()
    subject = _mailto_subject(rt, contact)
    payload, _, mac = subject.removeprefix("unsubscribe-").partition(".")
    _send(inbound, rt.settings.unsubscribe_mailto, f"unsubscribe-{payload}.{mac[::-1]}")
    _send(inbound, rt.settings.unsubscribe_mailto, "hello")
    assert _opt_outs(rt) == []


def test_mail_for_any_other_address_is_refused(rt: Runtime, inbound: InboundServer) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(inbound, "someone@cpi.example", "unsubscribe-x.y")
