"""Finding contacts and reading one contact's record, as the acting user may see them.

An account manager sees only contacts of their own clients, here as everywhere; admins and
marketing see every contact (marketing read-only).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from mailer import consent
from mailer.access.actor import Actor, deny, require
from mailer.enums import Role
from mailer.errors import MailerError, NotFoundError
from mailer.models import (
    Campaign,
    Contact,
    OptOut,
    Organization,
    Send,
    Suppression,
    User,
    parse_id,
)

#: Largest page of a contact search.
MAX_PAGE = 200
#: Sends shown in a contact's history (newest first).
HISTORY_SENDS = 100


class ContactQueryError(MailerError):
    """A contact search has a bad limit or cursor."""


@dataclass(frozen=True)
class ContactRow:
    id: int
    email: str
    first_name: str
    last_name: str
    title: str
    status: str
    organization_id: int
    organization_name: str
    organization_external_id: str
    organization_kind: str
    account_manager: str | None
    created_at: dt.datetime

    @property
    def name(self) -> str:
        """First and last name, as one line ("" when neither is known)."""
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True)
class ContactPage:
    items: list[ContactRow]
    #: Pass back as `after_id` for the next page; None on the last page.
    next_after_id: int | None


def visible_to(actor: Actor) -> ColumnElement[bool] | None:
    """The condition on `Organization` limiting rows to what `actor` may see (None: all)."""
    if actor.role is Role.ACCOUNT_MANAGER:
        return Organization.account_manager_id == (actor.user_id or -1)
    return None


def _base() -> Select[Contact, Organization, str]:
    return (
        select(Contact, Organization, User.username)
        .join(Organization, Organization.id == Contact.organization_id)
        .outerjoin(User, User.id == Organization.account_manager_id)
    )


def _row(contact: Contact, org: Organization, manager: str | None) -> ContactRow:
    return ContactRow(
        id=contact.id,
        email=contact.email,
        first_name=contact.first_name,
        last_name=contact.last_name,
        title=contact.title,
        status=contact.status,
        organization_id=org.id,
        organization_name=org.name,
        organization_external_id=org.external_id,
        organization_kind=org.kind,
        account_manager=manager,
        created_at=contact.created_at,
    )


def search_contacts(
    session: Session,
    actor: Actor,
    text: str = "",
    *,
    limit: int = 50,
    after_id: int | None = None,
) -> ContactPage:
    """Contacts whose email, name or organization (name or external id) contains `text`,
    by id, a page at a time (keyset: pass the page's `next_after_id`)."""
    require(session, actor, "contacts.view", object_type="contact")
    if not 1 <= limit <= MAX_PAGE:
        raise ContactQueryError(f"limit={limit}: choose 1 to {MAX_PAGE}")
    stmt = _base().order_by(Contact.id).limit(limit + 1)
    scope = visible_to(actor)
    if scope is not None:
        stmt = stmt.where(scope)
    if after_id is not None:
        stmt = stmt.where(Contact.id > after_id)
    needle = text.strip().lower()
    if needle:
        pattern = "%" + _escape_like(needle) + "%"
        stmt = stmt.where(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (
                        Contact.email,
                        Contact.first_name,
                        Contact.last_name,
                        Organization.name,
                        Organization.external_id,
                    )
                )
            )
        )
    rows = [_row(c, o, m) for c, o, m in session.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    return ContactPage(rows, rows[-1].id if more and rows else None)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class SendEntry:
    send_id: int
    campaign_id: int
    campaign_name: str
    category: str
    status: str
    skip_reason: str
    attempts: int
    sent_at: dt.datetime | None
    smtp_code: int | None
    smtp_reply: str
    #: When it last changed: sent, else last updated, else queued.
    at: dt.datetime | None = None

    @property
    def smtp(self) -> str:
        """The SMTP code and reply as one line ("" before any reply)."""
        return f"{self.smtp_code or ''} {self.smtp_reply}".strip()


@dataclass(frozen=True)
class OptOutEntry:
    id: int
    scope: str
    opted_out_at: dt.datetime
    revoked_at: dt.datetime | None
    source: str


@dataclass(frozen=True)
class SuppressionEntry:
    reason: str
    created_at: dt.datetime
    detail: str


@dataclass(frozen=True)
class ContactRecord:
    """One contact's page: who, consent per category, suppression, opt-out and send history."""

    contact: ContactRow
    #: Each scope the contact can switch: True while they still receive it.
    consent: dict[str, bool]
    suppression: SuppressionEntry | None
    opt_outs: list[OptOutEntry] = field(default_factory=list)
    sends: list[SendEntry] = field(default_factory=list)


def contact_id_for(session: Session, who: str) -> int:
    """The id of a contact given as an id or an email address; NotFoundError otherwise."""
    contact_id = parse_id(who)
    if contact_id is not None:
        return contact_id
    found = session.scalar(select(Contact.id).where(Contact.email == who.strip()))
    if found is None:
        raise NotFoundError(f"no contact with email {who!r}; `mailer contact search` finds them")
    return int(found)


def get_visible_contact(
    session: Session, actor: Actor, contact_id: int, action: str = "contacts.view"
) -> ContactRow:
    """The contact, if `actor` may see it; a refusal (audited) for another manager's client."""
    require(session, actor, action, object_type="contact", object_id=contact_id)
    found = session.execute(_base().where(Contact.id == contact_id)).first()
    if found is None:
        raise NotFoundError(f"contact {contact_id} does not exist (deleted, or never imported)")
    row = _row(found[0], found[1], found[2])
    if actor.role is Role.ACCOUNT_MANAGER and row.account_manager != actor.username:
        raise deny(
            session,
            actor,
            action,
            f"contact {contact_id} belongs to a client you do not manage",
            object_type="contact",
            object_id=contact_id,
        )
    return row


def contact_record(session: Session, actor: Actor, contact_id: int) -> ContactRecord:
    """Everything mailer knows about one contact's mail, as `actor` may see it."""
    row = get_visible_contact(session, actor, contact_id)
    contact = session.get(Contact, contact_id)
    assert contact is not None
    suppression = session.scalar(
        select(Suppression).where(Suppression.address_hash == contact.address_hash)
    )
    opt_outs = session.scalars(
        select(OptOut)
        .where(OptOut.address_hash == contact.address_hash)
        .order_by(OptOut.opted_out_at.desc(), OptOut.id.desc())
    )
    sends = session.execute(
        select(Send, Campaign.name)
        .join(Campaign, Campaign.id == Send.campaign_id)
        .where(Send.contact_id == contact_id)
        .order_by(Send.id.desc())
        .limit(HISTORY_SENDS)
    )
    return ContactRecord(
        contact=row,
        consent=consent.preferences(session, contact_id),
        suppression=(
            SuppressionEntry(suppression.reason, suppression.created_at, suppression.detail)
            if suppression
            else None
        ),
        opt_outs=[
            OptOutEntry(o.id, o.category, o.opted_out_at, o.revoked_at, o.source) for o in opt_outs
        ],
        sends=[
            SendEntry(
                send_id=s.id,
                campaign_id=s.campaign_id,
                campaign_name=name,
                category=s.category,
                status=s.status,
                skip_reason=s.skip_reason,
                attempts=s.attempts,
                sent_at=s.sent_at,
                smtp_code=s.smtp_code,
                smtp_reply=s.smtp_reply,
                at=s.sent_at or s.updated_at or s.created_at,
            )
            for s, name in sends
        ],
    )
