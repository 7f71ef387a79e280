"""Asynchronous bounces (DSN, RFC 3464) and complaints (ARF, RFC 5965), docs/standards.md §6.

`parse_report` reads a report's bytes into `BounceEvent`s; `apply_events` finds the send each
event is about and acts on it, with the actor "bounce-processor":

| event                                   | effect                                              |
| --------------------------------------- | --------------------------------------------------- |
| DSN `Action: failed`, classify → HARD   | Suppression `hard_bounce`; the send, if `sent`,     |
|                                         | becomes `failed` with the status and diagnostic     |
| failed and SOFT / RATE (e.g. 5.2.2)     | an audit event only                                 |
| failed and POLICY (5.7.x, our defect)   | an audit event only: never suppress the recipient   |
| DSN `Action: delayed`                   | an audit event only                                 |
| ARF abuse, fraud or other               | opt-outs of all marketing and of service (source    |
|                                         | `complaint`); NO Suppression row                    |

Complaints (docs/standards.md §6) stop every stream that can be opted out of at once but keep
the mandatory notices. A Suppression row would also stop policy notices (the policy guard checks
suppressions), and a privacy notice is owed even to someone who marked our promotion as spam.
So a complaint opts the contact out of everything that can be opted out of, and the mandatory
policy notices still go. `not-spam`, `virus` and `auth-failure` reports are audited only.

Mapping a report to a send: the envelope recipient's VERP token (`bounces+<token>@domain`,
`TokenSigner.make_bounce`) first. A token that does not verify means the report is forged,
and nothing is done. A report to the bare bounce address falls back to the original
Message-ID quoted in the report, whose own MAC proves it is ours (`read_message_id`) but not
that the reporter received it: anyone who saw the message knows it. On that path the report
must name the send's own recipient, and a hard bounce is not taken (`_refusal`).
Complaints count only from MAILER_FEEDBACK_LOOP_SENDERS, on either path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.alerts import deliver_pending
from mailer.audit import record
from mailer.config import Settings
from mailer.consent import opt_out
from mailer.deliverability.events import record_event
from mailer.deliverability.rates import check_rates
from mailer.deliverability.soft import note_soft_bounce
from mailer.delivery.results import suppress
from mailer.enums import ALL_MARKETING, Category, OptOutSource, SendStatus
from mailer.errors import NotFoundError, TokenError
from mailer.inbound.reports import BounceEvent, parse_report
from mailer.messages.builder import read_message_id, verp_parts
from mailer.models import Send, utcnow
from mailer.outgoing import ReplyKind
from mailer.runtime import Runtime
from mailer.tokens import TokenSigner
from mailer.transports.base import classify

#: Who every change made here is audited as.
ACTOR = "bounce-processor"
#: Feedback types that are the recipient's complaint (RFC 5965 §7.3); others are audited only.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other"})
_REPLY_CODE = re.compile(r"\b([245]\d\d)\b")


@dataclass(frozen=True)
class Applied:
    """What `apply_events` did with one event: `action` is the audit action or "ignored"."""

    event: BounceEvent
    send_id: int | None
    action: str
    #: Why an event was ignored.
    reason: str = ""
    campaign_id: int | None = None


def send_for(rt: Runtime, signer: TokenSigner, envelope_rcpt: str, message_id: str) -> int | None:
    """The send a report is about, or None (a forged VERP token is None, with no fallback)."""
    send_id, _via_verp = _find_send(rt, signer, envelope_rcpt, message_id)
    return send_id


def _find_send(
    rt: Runtime, signer: TokenSigner, envelope_rcpt: str, message_id: str
) -> tuple[int | None, bool]:
    """(send id or None, whether the VERP address named it)."""
    prefix, suffix = verp_parts(rt.settings.envelope_sender)
    rcpt = envelope_rcpt.strip().strip("<>")
    if rcpt.lower().startswith(prefix.lower()) and rcpt.lower().endswith(suffix.lower()):
        token = rcpt[len(prefix) : len(rcpt) - len(suffix)]
        try:
            return signer.read_bounce(token), True
        except TokenError:
            return None, True
    ours = read_message_id(rt.settings, message_id) if message_id else None
    return (ours[1] if ours else None), False


def is_feedback_loop(settings: Settings, reporter: str) -> bool:
    """Whether `reporter` (a report's From address) is one of MAILER_FEEDBACK_LOOP_SENDERS."""
    reporter = reporter.strip().lower()
    domain = reporter.rpartition("@")[2]
    if not reporter or not domain:
        return False
    for allowed in settings.feedback_loop_senders:
        if "@" in allowed:
            if reporter == allowed:
                return True
        elif domain == allowed or domain.endswith("." + allowed):
            return True
    return False


def _refusal(rt: Runtime, send: Send, event: BounceEvent, via_verp: bool) -> str:
    """Why an event must not be acted on; "" when it may.

    The VERP address was seen only by the server that received the message; a Message-ID was
    seen by every reader, forwardee and archive of it, so on that path a report must name the
    send's own recipient, and a hard bounce (which stops even policy notices) is not taken.
    A complaint counts only from a feedback loop we configured: it opts the contact out.
    """
    if event.kind == "complaint":
        if not is_feedback_loop(rt.settings, event.reporter):
            return f"complaint from {event.reporter or 'nobody'}, not a feedback loop sender"
        return ""  # feedback loops often redact the recipient; the sender is what we trust
    if via_verp:
        return ""
    if event.recipient.strip().lower() != send.email.lower():
        return "the reported recipient is not the send's, and the report came without VERP"
    if event.kind == "failed" and _kind(event) is ReplyKind.HARD:
        return "hard bounces are taken only at the VERP address"
    return ""


def apply_events(rt: Runtime, events: list[BounceEvent], *, envelope_rcpt: str) -> list[Applied]:
    """Act on the events of one report, in one transaction (all or nothing), and say what."""
    signer = TokenSigner(rt.settings)
    done: list[Applied] = []
    with rt.sessions.begin() as session:
        for event in events:
            send_id, via_verp = _find_send(rt, signer, envelope_rcpt, event.message_id)
            send = session.get(Send, send_id) if send_id is not None else None
            if send is None:
                done.append(Applied(event, send_id, "ignored", "no send of ours"))
                continue
            refusal = _refusal(rt, send, event, via_verp)
            if refusal:
                done.append(Applied(event, send.id, "ignored", refusal))
                continue
            action = _apply(rt, session, send, event)
            done.append(Applied(event, send.id, action, campaign_id=send.campaign_id))
        now = utcnow()
        for campaign_id in sorted(
            {
                a.campaign_id
                for a in done
                if a.campaign_id is not None and a.action in ("bounce.hard", "bounce.complaint")
            }
        ):
            check_rates(session, rt.settings, campaign_id, now)
    deliver_pending(rt)
    return done


def apply_event(rt: Runtime, session: Session, send: Send, event: BounceEvent) -> str:
    """Act on one event already matched to `send` and believed; the audit action it took.

    Provider webhooks (mailer.deliverability.providers) come here too, once their signature
    is verified: the same effects whichever way a bounce or a complaint arrives."""
    return _apply(rt, session, send, event)


def _apply(rt: Runtime, session: Session, send: Send, event: BounceEvent) -> str:
    details: dict[str, Any] = {
        "send_id": send.id,
        "campaign_id": send.campaign_id,
        "status": event.status,
        # no addresses in the audit log: it outlives the contact (retention keeps it); the
        # diagnostic, which often quotes the address, goes to the send row instead
        "recipient_matches_send": event.recipient.strip().lower() == send.email.lower(),
    }
    if event.kind == "complaint":
        action = _complaint(session, send, event, details)
        if action == "bounce.complaint":
            record_event(
                session,
                source="arf",
                event_key=f"send:{send.id}",
                kind="complaint",
                send_id=send.id,
                campaign_id=send.campaign_id,
                now=utcnow(),
                detail=event.feedback_type,
            )
        return action
    if event.kind == "delayed":
        action = "bounce.delayed"
        if event.status.startswith("4"):
            details["soft_bounces_stop_marketing"] = _soft_bounce(rt, session, send, event)
    else:
        kind = _kind(event)
        if kind is ReplyKind.HARD:
            _hard_bounce(rt, session, send, event)
            action = "bounce.hard"
        elif kind is ReplyKind.POLICY:
            action = "bounce.policy"  # our defect: the operator must look, the address is fine
        else:
            action = "bounce.soft"
            details["soft_bounces_stop_marketing"] = _soft_bounce(rt, session, send, event)
        details["kind"] = str(kind)
    record(session, ACTOR, action, object_type="send", object_id=send.id, **details)
    return action


def _kind(event: BounceEvent) -> ReplyKind:
    return classify(_reply_code(event), event.status)


def _reply_code(event: BounceEvent) -> int:
    """The SMTP reply code in the diagnostic ("smtp; 550 5.1.1 …"), else one of the status's
    class: a DSN's Status is required, its Diagnostic-Code is not."""
    match = _REPLY_CODE.search(event.diagnostic)
    if match and (not event.status or match.group(1)[0] == event.status[0]):
        return int(match.group(1))
    return int(event.status[0]) * 100 + 50 if event.status else 550


def _hard_bounce(rt: Runtime, session: Session, send: Send, event: BounceEvent) -> None:
    now = utcnow()
    detail = f"{event.status} {event.diagnostic}".strip() or "hard bounce"
    suppress(session, [(send.email, detail)], now, rt.hash_address)
    # only a send we believed delivered: a failed or skipped one already says why
    session.execute(
        update(Send)
        .where(Send.id == send.id, Send.status == SendStatus.SENT.value)
        .values(
            status=SendStatus.FAILED.value,
            smtp_code=_reply_code(event),
            smtp_reply=f"bounced later: {detail}"[:1000],
            updated_at=now,
        )
    )


def _soft_bounce(rt: Runtime, session: Session, send: Send, event: BounceEvent) -> bool:
    """Count a soft bounce of the send's address; True if that stops its marketing mail."""
    return note_soft_bounce(
        session,
        rt.settings,
        email=send.email,
        address_hash=rt.hash_address(send.email),
        send_id=send.id,
        detail=f"{event.status} {event.diagnostic}".strip(),
        now=utcnow(),
    )


def _complaint(session: Session, send: Send, event: BounceEvent, details: dict[str, Any]) -> str:
    details["feedback_type"] = event.feedback_type
    if event.feedback_type not in COMPLAINT_TYPES or send.contact_id is None:
        # not a complaint (not-spam, virus …), or the contact is gone: nothing to opt out
        action = "bounce.feedback"
    else:
        action = "bounce.complaint"
        for scope in (ALL_MARKETING, Category.SERVICE):
            try:
                opt_out(
                    session,
                    contact_id=send.contact_id,
                    scope=str(scope),
                    source=OptOutSource.COMPLAINT,
                    ip="",
                    user_agent=f"feedback report: {event.feedback_type}",
                    send_id=send.id,
                    actor=ACTOR,
                )
            except NotFoundError:
                action = "bounce.feedback"
                break
    record(session, ACTOR, action, object_type="send", object_id=send.id, **details)
    return action


def process_report(rt: Runtime, data: bytes, *, envelope_rcpt: str) -> list[Applied]:
    """`parse_report` then `apply_events`: what `mailer inbound` calls for a bounce address."""
    return apply_events(rt, parse_report(data), envelope_rcpt=envelope_rcpt)
