"""Who a message goes to and who it is from: one definition for delivery, policy notices and
previews, so `mailer template preview` shows exactly what a campaign sends."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import NotFoundError
from mailer.messages import Recipient, SenderIdentity
from mailer.messages.check import SAMPLE_POLICY_PARAMS
from mailer.models import Contact, Organization, User, parse_id


def sender_for(
    session: Session, settings: Settings, category: Category | str, sender_username: str = ""
) -> SenderIdentity:
    """The identity a campaign is sent as.

    Service mail goes out as the account manager named by the campaign (replies reach that
    person); policy notices as the company; marketing as the marketing sender.
    """
    category = Category(category)
    if category is Category.SERVICE and sender_username:
        user = session.scalars(select(User).where(User.username == sender_username)).one()
        return SenderIdentity(user.display_name, user.email, phone=user.phone, reply_to=user.email)
    raw = settings.company_from if category is Category.POLICY else settings.marketing_from
    name, email = parseaddr(raw)
    return SenderIdentity(name, email)


def recipient_from_row(row: Any) -> Recipient:
    """A Recipient from a row with the send log's recipient columns (see `recipient_for`)."""
    return Recipient(
        send_id=row.send_id,
        contact_id=row.contact_id,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        title=row.title,
        needs_smtputf8=bool(row.needs_smtputf8),
        org_name=row.org_name,
        org_industry=row.industry,
        org_employees=row.benefit_eligible_employees,
        org_city=row.city,
        org_state=row.state,
        org_kind=row.kind,
        manager_name=row.manager_name or "",
        manager_email=row.manager_email or "",
        manager_phone=row.manager_phone or "",
    )


def recipient_for(session: Session, contact: int | str) -> tuple[Recipient, User | None]:
    """The contact (an id, or an email address in any case) as a campaign would address it
    (send id 0), and its organization's account manager (None when it has none)."""
    query = select(Contact, Organization).join(
        Organization, Contact.organization_id == Organization.id
    )
    if isinstance(contact, int):
        query = query.where(Contact.id == contact)
    elif (contact_id := parse_id(contact)) is not None:
        query = query.where(Contact.id == contact_id)
    else:
        query = query.where(func.lower(Contact.email) == contact.strip().lower())
    row = session.execute(query).first()
    if row is None:
        raise NotFoundError(f"no contact {contact!r}; check the address or import it")
    found, org = row
    manager = session.get(User, org.account_manager_id) if org.account_manager_id else None
    recipient = Recipient(
        send_id=0,
        contact_id=found.id,
        email=found.email,
        first_name=found.first_name,
        last_name=found.last_name,
        title=found.title,
        needs_smtputf8=bool(found.needs_smtputf8),
        org_name=org.name,
        org_industry=org.industry,
        org_employees=org.benefit_eligible_employees,
        org_city=org.city,
        org_state=org.state,
        org_kind=org.kind,
        manager_name=manager.display_name if manager else "",
        manager_email=manager.email if manager else "",
        manager_phone=manager.phone if manager else "",
    )
    return recipient, manager


def latest_notice_params(session: Session, settings: Settings) -> dict[str, object]:
    """What a policy notice announcing the newest version carries (changes, its link …), as
    `policy publish` gives its notice; sample values before any version exists."""
    # imported here: mailer.policy builds on mailer.delivery, which must load first
    from mailer.policy.publish import notice_params
    from mailer.policy.text import all_versions

    newest = next(iter(all_versions(session)), None)
    return notice_params(settings, newest) if newest else dict(SAMPLE_POLICY_PARAMS)
