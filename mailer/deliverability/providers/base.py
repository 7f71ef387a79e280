"""Provider events and the one path that applies them, idempotently."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.alerts import deliver_pending
from mailer.audit import record
from mailer.config import Settings
from mailer.consent import opt_out
from mailer.deliverability.events import record_event
from mailer.deliverability.rates import check_rates
from mailer.deliverability.soft import note_delivered
from mailer.enums import ALL_MARKETING, Category, OptOutSource, SendStatus
from mailer.errors import MailerError, NotFoundError
from mailer.inbound.bounces import ACTOR, apply_event, send_for
from mailer.inbound.reports import BounceEvent
from mailer.models import Send, utcnow
from mailer.runtime import Runtime
from mailer.tokens import TokenSigner

#: Event kinds a provider reports that change something.
KINDS = ("delivered", "soft_bounce", "hard_bounce", "complaint", "unsubscribe")


class WebhookRefused(MailerError):
    """A webhook request that is unsigned, wrongly signed, stale or malformed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ProviderEvent:
    """One provider event about one recipient of one message."""

    kind: str  #: one of KINDS, or "other" (recorded only)
    #: The provider's id for the event, unique per provider: the same event twice is taken once.
    event_key: str
    recipient: str
    #: Our Message-ID when the provider quotes it; our VERP envelope sender when it gives it.
    message_id: str = ""
    envelope_sender: str = ""
    status: str = ""  #: RFC 3463 code, e.g. "5.1.1"
    detail: str = ""
    at: dt.datetime | None = None


@dataclass
class Applied:
    taken: int = 0
    duplicates: int = 0
    ignored: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"taken": self.taken, "duplicates": self.duplicates, "ignored": self.ignored}


Parser = Callable[[Settings, Mapping[str, str], bytes, dt.datetime], list[ProviderEvent]]


def _parsers() -> dict[str, Parser]:
    from mailer.deliverability.providers import mailgun, postmark, sendgrid, ses

    return {
        "ses": ses.verify_and_parse,
        "sendgrid": sendgrid.verify_and_parse,
        "postmark": postmark.verify_and_parse,
        "mailgun": mailgun.verify_and_parse,
    }


#: The providers with a webhook, by the name in /webhooks/{provider}.
PROVIDERS = ("ses", "sendgrid", "postmark", "mailgun")


def verify_and_parse(
    provider: str,
    settings: Settings,
    headers: Mapping[str, str],
    body: bytes,
    now: dt.datetime | None = None,
) -> list[ProviderEvent]:
    """The events of a request, once its signature and freshness are proven; WebhookRefused."""
    parser = _parsers().get(provider)
    if parser is None:
        raise WebhookRefused(404, f"no webhook for provider {provider!r}; one of {PROVIDERS}")
    return parser(settings, {k.lower(): v for k, v in headers.items()}, body, now or utcnow())


def check_fresh(settings: Settings, at: dt.datetime, now: dt.datetime, what: str) -> None:
    age = (now - at).total_seconds()
    if age > settings.webhook_max_age_s or age < -300:
        raise WebhookRefused(
            401,
            f"{what} is {age:.0f} s old; only requests within MAILER_WEBHOOK_MAX_AGE_S="
            f"{settings.webhook_max_age_s} s are taken (a replay, or the clocks disagree)",
        )


def apply_provider_events(
    rt: Runtime,
    source: str,
    events: list[ProviderEvent],
    *,
    also_record: Callable[[Session], None] | None = None,
) -> Applied:
    """Act on verified events in one transaction; an event seen before changes nothing."""
    signer = TokenSigner(rt.settings)
    applied = Applied()
    now = utcnow()
    campaigns: set[int] = set()
    with rt.sessions.begin() as session:
        if also_record is not None:
            also_record(session)
        for event in events:
            send = _find(rt, session, signer, event)
            if send is None:
                applied.ignored.append(f"{event.event_key}: no send of ours")
                if event.kind in KINDS:
                    record_event(
                        session,
                        source=source,
                        event_key=event.event_key,
                        kind="other",
                        send_id=None,
                        campaign_id=None,
                        now=now,
                        detail=f"unmatched {event.kind}",
                    )
                continue
            kind = event.kind if event.kind in KINDS else "other"
            is_new = record_event(
                session,
                source=source,
                event_key=event.event_key,
                kind=kind,
                send_id=send.id,
                campaign_id=send.campaign_id,
                now=now,
                detail=f"{event.status} {event.detail}".strip(),
            )
            if not is_new:
                applied.duplicates += 1
                continue
            reason = _apply(rt, session, send, event, source, now)
            if reason:
                applied.ignored.append(f"{event.event_key}: {reason}")
                continue
            applied.taken += 1
            if kind in ("hard_bounce", "complaint"):
                campaigns.add(send.campaign_id)
        for campaign_id in sorted(campaigns):
            check_rates(session, rt.settings, campaign_id, now)
    deliver_pending(rt)
    return applied


def _find(rt: Runtime, session: Session, signer: TokenSigner, event: ProviderEvent) -> Send | None:
    send_id = None
    if event.envelope_sender or event.message_id:
        send_id = send_for(rt, signer, event.envelope_sender, event.message_id)
    if send_id is not None:
        send = session.get(Send, send_id)
    elif event.recipient:
        # the provider quoted neither (Postmark over SMTP): the last message to the address
        send = session.scalars(
            select(Send)
            .where(
                func.lower(Send.email) == event.recipient.strip().lower(),
                Send.status.in_((SendStatus.SENT.value, SendStatus.FAILED.value)),
            )
            .order_by(Send.sent_at.desc().nulls_last(), Send.id.desc())
            .limit(1)
        ).first()
    else:
        send = None
    if send is None:
        return None
    if event.recipient and event.recipient.strip().lower() != send.email.lower():
        return None  # a signed event about another address than the send's: not ours to act on
    return send


def _apply(
    rt: Runtime, session: Session, send: Send, event: ProviderEvent, source: str, now: dt.datetime
) -> str:
    """Do what the event means; "" when done, else why nothing was done."""
    if event.kind == "delivered":
        note_delivered(session, [(send.email, send.id)], now, rt.hash_address)
        return ""
    if event.kind in ("hard_bounce", "soft_bounce"):
        default = "5.0.0" if event.kind == "hard_bounce" else "4.0.0"
        status = event.status if event.status[:1] in ("4", "5") else default
        if event.kind == "soft_bounce" and status.startswith("5") and status != "5.2.2":
            status = "4.0.0"  # the provider says soft: it is soft, whatever the code
        if event.kind == "hard_bounce" and status.startswith("4"):
            status = default
        bounce = BounceEvent(
            kind="failed",
            recipient=send.email,
            status=status,
            diagnostic=f"{source}: {event.detail}",
            message_id=event.message_id,
        )
        apply_event(rt, session, send, bounce)
        return ""
    if event.kind == "complaint":
        complaint = BounceEvent(
            kind="complaint",
            recipient=send.email,
            feedback_type="abuse",
            message_id=event.message_id,
            reporter=source,
        )
        action = apply_event(rt, session, send, complaint)
        return "" if action == "bounce.complaint" else "the contact is gone"
    if event.kind == "unsubscribe":
        return _unsubscribe(session, send, source)
    record(
        session,
        ACTOR,
        f"provider.{source}.other",
        object_type="send",
        object_id=send.id,
        detail=event.detail[:500],
    )
    return ""


def _unsubscribe(session: Session, send: Send, source: str) -> str:
    category = Category(send.category)
    if not category.allows_opt_out:
        return "policy notices cannot be opted out of"
    if send.contact_id is None:
        return "the contact is gone"
    scope = ALL_MARKETING if category.is_marketing else str(category)
    try:
        opt_out(
            session,
            contact_id=send.contact_id,
            scope=scope,
            source=OptOutSource.PROVIDER,
            ip="",
            user_agent=f"{source} unsubscribe event",
            send_id=send.id,
            actor=ACTOR,
        )
    except NotFoundError:
        return "the contact is gone"
    return ""
