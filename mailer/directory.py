"""Finding contacts and what mailer knows about each: search, the contact's page, and the
admin's manual opt-outs, suppressions and unsuppressions (each with a reason, audited).

An account manager sees only the contacts of their own clients; marketing and admins see all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mailer import consent
from mailer.access import Actor, audit, deny, require
from mailer.addresses import normalize
from mailer.enums import OptOutSource, Role, SuppressionReason
from mailer.errors import MailerError, NotFoundError
from mailer.models import Campaign, Contact, Organization, Send, Suppression, User, utcnow

#: The shortest reason an admin may give for a manual change.
MIN_REASON_CHARS = 4


class ReasonRequiredError(MailerError):
    """A manual opt-out, suppression or unsuppression needs a reason for the record."""


@dataclass(frozen=True)
class ContactRow:
    id: int
    email: str
    name: str
    title: str
    organization: str
    organization_kind: str
    status: str


@dataclass
class ContactDetails:
    contact: Contact
    organization: Organization
    account_manager: str
    #: scope -> still subscribed?
    preferences: dict[str, bool]
    suppression: Suppression | None
    sends: list[dict[str, Any]] = field(default_factory=list)


def _visible(actor: Actor) -> Any:
    query = select(Contact, Organization).join(
        Organization, Organization.id == Contact.organization_id
    )
    if actor.role == Role.ACCOUNT_MANAGER:
        query = query.where(Organization.account_manager_id == actor.user_id)
    return query


def search_contacts(
    session: Session, actor: Actor, text: str, *, limit: int = 50, after_id: int = 0
) -> list[ContactRow]:
    """Contacts whose email, name or organization contains `text`, by id (keyset)."""
    require(session, actor, "contacts.view", object_type="contact")
    query = _visible(actor).where(Contact.id > after_id).order_by(Contact.id).limit(limit)
    text = text.strip()
    if text:
        like = f"%{text}%"
        query = query.where(
            or_(
                Contact.email.ilike(like),
                Contact.first_name.ilike(like),
                Contact.last_name.ilike(like),
                Organization.name.ilike(like),
                Organization.external_id == text,
            )
        )
    return [
        ContactRow(
            c.id,
            c.email,
            f"{c.first_name} {c.last_name}".strip(),
            c.title,
            o.name,
            o.kind,
            c.status,
        )
        for c, o in session.execute(query)
    ]


def contact_details(session: Session, actor: Actor, contact_id: int) -> ContactDetails:
    """A contact with consent per category, suppression and the last 100 sends."""
    require(session, actor, "contacts.view", object_type="contact", object_id=contact_id)
    row = session.execute(_visible(actor).where(Contact.id == contact_id)).first()
    if row is None:
        if session.get(Contact, contact_id) is not None:
            raise deny(
                session,
                actor,
                "contacts.view",
                f"contact {contact_id} belongs to another account manager's client",
                object_type="contact",
                object_id=contact_id,
            )
        raise NotFoundError(f"no contact {contact_id}")
    contact, org = row
    manager = session.get(User, org.account_manager_id) if org.account_manager_id else None
    suppression = session.scalar(
        select(Suppression).where(Suppression.address_hash == contact.address_hash)
    )
    sends = [
        {
            "campaign_id": s.campaign_id,
            "campaign": name,
            "category": s.category,
            "status": s.status,
            "skip_reason": s.skip_reason,
            "smtp": f"{s.smtp_code or ''} {s.smtp_reply}".strip(),
            "at": s.sent_at or s.updated_at or s.created_at,
        }
        for s, name in session.execute(
            select(Send, Campaign.name)
            .join(Campaign, Campaign.id == Send.campaign_id)
            .where(Send.contact_id == contact_id)
            .order_by(Send.id.desc())
            .limit(100)
        )
    ]
    return ContactDetails(
        contact,
        org,
        manager.username if manager else "",
        consent.preferences(session, contact_id),
        suppression,
        sends,
    )


def _reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) < MIN_REASON_CHARS:
        raise ReasonRequiredError(
            "give a reason (e.g. 'asked by phone on 2026-11-30'); it goes in the audit log"
        )
    return reason[:500]


def admin_opt_out(
    session: Session, actor: Actor, contact_id: int, scope: str, *, reason: str
) -> bool:
    """Opt a contact out of `scope` on their behalf (admins only); False if already out."""
    require(session, actor, "consent.admin_opt_out", object_type="contact", object_id=contact_id)
    reason = _reason(reason)
    changed = consent.opt_out(
        session,
        contact_id=contact_id,
        scope=scope,
        source=OptOutSource.ADMIN,
        ip=actor.ip or "",
        user_agent="",
        actor=actor.username,
    )
    if changed:
        audit(
            session,
            actor,
            "consent.admin_opt_out",
            object_type="contact",
            object_id=contact_id,
            scope=scope,
            reason=reason,
        )
    return changed


def suppress(session: Session, actor: Actor, contact_id: int, *, reason: str) -> bool:
    """Stop all mail to the contact's address (admins only); False if already suppressed."""
    require(session, actor, "suppression.add", object_type="contact", object_id=contact_id)
    reason = _reason(reason)
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    exists = session.scalar(
        select(Suppression.id).where(Suppression.address_hash == contact.address_hash)
    )
    if exists is not None:
        return False
    session.add(
        Suppression(
            address=normalize(contact.email).normalized,
            address_hash=contact.address_hash,
            reason=SuppressionReason.MANUAL,
            detail=reason,
            created_at=utcnow(),
        )
    )
    audit(
        session,
        actor,
        "suppression.add",
        object_type="contact",
        object_id=contact_id,
        reason=reason,
    )
    return True


def unsuppress(session: Session, actor: Actor, contact_id: int, *, reason: str) -> bool:
    """Let mail go to the contact's address again (admins only); False if it was not blocked."""
    require(session, actor, "suppression.remove", object_type="contact", object_id=contact_id)
    reason = _reason(reason)
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    row = session.scalar(
        select(Suppression).where(Suppression.address_hash == contact.address_hash)
    )
    if row is None:
        return False
    audit(
        session,
        actor,
        "suppression.remove",
        object_type="contact",
        object_id=contact_id,
        reason=reason,
        was=row.reason,
        detail=row.detail,
        since=row.created_at.isoformat(),
    )
    session.delete(row)
    return True
