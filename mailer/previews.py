"""A campaign's message as one real contact would get it, and test sends of it.

`preview_message` renders a template for a contact (headers, text, HTML) without sending
anything; `send_test` renders it the same way and delivers it to addresses the caller names,
marked as a test: "[TEST]" in the subject, an `X-Mailer-Test` header, no DKIM signature, no
row in the send log. Both are audited, since they show a contact's details.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from sqlalchemy.orm import Session

from mailer.access import Actor, audit, require
from mailer.access.permissions import ALLOWED_CATEGORIES
from mailer.addresses import normalize
from mailer.config import Settings
from mailer.contacts.lookup import get_visible_contact
from mailer.delivery.identities import latest_notice_params, recipient_for, sender_for
from mailer.enums import Category
from mailer.errors import MailerError
from mailer.messages import (
    CampaignInfo,
    CampaignMessages,
    Recipient,
    Template,
    check_params,
)
from mailer.messages.check import sample_params
from mailer.messages.templates import compile_template
from mailer.models import Campaign
from mailer.outgoing import DeliveryResult, Outcome
from mailer.rules import Preview, parse_rule, preview_audience
from mailer.runtime import Runtime
from mailer.template_store import campaign_template, choose_source
from mailer.transports import make_transport

#: How many addresses one test send may go to: a test, not a campaign.
MAX_TEST_RECIPIENTS = 10
#: Marks every test message, so no reader mistakes it for the real thing.
TEST_SUBJECT_PREFIX = "[TEST] "
TEST_HEADER = b"X-Mailer-Test: yes; not part of any campaign's send log\r\n"


class TestSendError(MailerError):
    """A test send cannot go out as asked (no addresses, too many, or a bad one)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, message: str, *, field: str = "to") -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class MessagePreview:
    """One rendered message: what the contact would see, and its headers."""

    template: str
    contact_id: int
    contact_email: str
    subject: str
    text: str
    html: str
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class TestDelivery:
    """What the SMTP server answered for one test address."""

    __test__ = False

    address: str
    outcome: str
    code: int | None
    reply: str


def preview_message(
    rt: Runtime,
    actor: Actor,
    *,
    template: str,
    contact: int | str,
    params: dict[str, Any] | None = None,
    campaign_id: int | None = None,
) -> MessagePreview:
    """Render `template` as `contact` (id or email) would get it; audited as template.preview.

    With `campaign_id`, the campaign's own source: its pinned version and its own subject."""
    with rt.sessions.begin() as session:
        make, recipient = _prepare(rt.settings, session, actor, template, contact, campaign_id)
        messages = make(params)
        out = messages.build(recipient)
        subject, text, html = messages.render_parts(recipient)
        audit(
            session,
            actor,
            "template.preview",
            object_type="template",
            object_id=template,
            contact_id=recipient.contact_id,
        )
    parsed = message_from_bytes(out.data, policy=default_policy)
    headers = [(key, str(value)) for key, value in parsed.items()]
    return MessagePreview(
        template, recipient.contact_id, recipient.email, subject, text, html, headers
    )


def parse_test_addresses(text: str) -> list[str]:
    """The addresses of a test send (one a line, or comma-separated); TestSendError if bad."""
    items = [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]
    if not items:
        raise TestSendError("give at least one address to send the test to")
    if len(items) > MAX_TEST_RECIPIENTS:
        raise TestSendError(
            f"{len(items)} addresses given; a test goes to at most {MAX_TEST_RECIPIENTS}"
        )
    addresses = []
    for item in items:
        try:
            addresses.append(normalize(item).normalized)
        except ValueError as exc:
            raise TestSendError(f"{item!r} is not a usable address: {exc}") from exc
    return addresses


async def send_test(
    rt: Runtime,
    actor: Actor,
    *,
    template: str,
    contact: int | str,
    to: list[str],
    params: dict[str, Any] | None = None,
    campaign_id: int | None = None,
) -> list[TestDelivery]:
    """Render `template` as `contact` (id or email) and deliver it to each address in `to`.

    Nothing is written to the send log; the audit event `campaign.test_send` names the
    addresses and what the server answered.
    """
    addresses = parse_test_addresses("\n".join(to))
    settings = rt.settings.with_(dkim_private_key_path="")
    with rt.sessions() as session:
        make, recipient = _prepare(settings, session, actor, template, contact, campaign_id)
        messages = make(params)
        built = []
        for n, address in enumerate(addresses):
            message = messages.build(recipient)
            message.send_id = -(n + 1)  # negative: no send-log row has it
            message.rcpt = address
            message.data = TEST_HEADER + _to_and_subject(message.data, address)
            built.append(message)
    transport = make_transport(settings)
    await transport.open()
    try:
        results: list[DeliveryResult] = await transport.send_batch(built)
    finally:
        await transport.close()
    deliveries = [
        TestDelivery(address, r.outcome.value, r.code, r.reply)
        for address, r in zip(addresses, results, strict=True)
    ]
    with rt.sessions.begin() as session:
        audit(
            session,
            actor,
            "campaign.test_send",
            object_type="campaign" if campaign_id else "template",
            object_id=campaign_id or template,
            template=template,
            as_contact_id=recipient.contact_id,
            to=addresses,
            sent=sum(1 for d in deliveries if d.outcome == Outcome.SENT),
            replies=[f"{d.code or ''} {d.reply}".strip() for d in deliveries],
        )
    return deliveries


def _to_and_subject(data: bytes, address: str) -> bytes:
    """The test's To is the address it goes to; its subject says it is a test."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out = []
    skip_folded = False
    for line in lines:
        if skip_folded and line[:1] in (b" ", b"\t"):
            continue
        skip_folded = False
        lower = line.lower()
        if lower.startswith(b"to:"):
            out.append(b"To: <" + address.encode("utf-8") + b">")
            skip_folded = True
            continue
        if lower.startswith(b"subject:"):
            line = b"Subject: " + TEST_SUBJECT_PREFIX.encode() + line[len(b"subject:") :].lstrip()
        out.append(line)
    return b"\r\n".join(out) + sep + body


def _prepare(
    settings: Settings,
    session: Session,
    actor: Actor,
    template_name: str,
    contact: int | str,
    campaign_id: int | None = None,
) -> tuple[Any, Recipient]:
    campaign = session.get(Campaign, campaign_id) if campaign_id is not None else None
    if campaign is not None:
        template = campaign_template(session, settings, campaign)
    else:
        template = compile_template(
            settings, choose_source(session, settings, template_name).source
        )
    require_category(session, actor, template.category, template_name)
    recipient, manager = recipient_for(session, contact)
    # one rule for who may see a contact: an account manager, only their own clients (audited)
    get_visible_contact(session, actor, recipient.contact_id, action="template.preview")
    # the same recipient, sender and notice parameters as a real send (delivery/identities.py)
    is_service = template.category is Category.SERVICE
    sender = sender_for(
        session, settings, template.category, manager.username if manager and is_service else ""
    )
    policy = latest_notice_params(session, settings) if template.category is Category.POLICY else {}

    def make(params: dict[str, Any] | None) -> CampaignMessages:
        return CampaignMessages(
            settings.with_(dkim_private_key_path=""),
            template=template,
            campaign=CampaignInfo(
                id=0, name=f"preview {template_name}", category=template.category
            ),
            sender=sender,
            params={**policy, **_declared(template, params)},
        )

    return make, recipient


def require_category(session: Session, actor: Actor, category: Category, what: str) -> None:
    """Refuse (audited) unless the actor's role may send mail of `category`."""
    allowed = ALLOWED_CATEGORIES[actor.role]
    require(
        session,
        actor,
        "template.view",
        object_type="template",
        object_id=what,
        allowed=category in allowed,
        reason=f"{category} mail needs another role (the role {actor.role.value} sends "
        + ", ".join(sorted(allowed))
        + ")",
    )


def _declared(template: Template, params: dict[str, Any] | None) -> dict[str, Any]:
    """The campaign parameters to preview with: those given (checked against the template's
    declared ones, with did-you-mean), the rest shown as `[name]`."""
    if template.category is Category.POLICY:
        return dict(params or {})
    merged = {**sample_params(template), **(params or {})}
    check_params(template, merged)
    return merged


def count_audience(
    rt: Runtime,
    actor: Actor,
    *,
    rule_text: str,
    category: Category | str,
    sample_size: int = 10,
    now: dt.datetime | None = None,
) -> Preview:
    """Who `rule_text` reaches in `category` as `actor` would launch it: counts and a sample.

    An account manager sees only their own clients. RuleError says where a rule is wrong.
    """
    category = Category(category)
    rule = parse_rule(rule_text, "rule") if rule_text.strip() else None
    with rt.sessions.begin() as session:
        require_category(session, actor, category, "audience")
        return preview_audience(
            session,
            actor,
            rule,
            category,
            settings=rt.settings,
            label="rule",
            sample_size=sample_size,
            now=now,
        )
