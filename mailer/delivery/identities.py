"""Who a message goes to and who it is from: one definition for delivery, policy notices and
previews, so `mailer template preview` shows exactly what a campaign sends."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import NotFoundError
from mailer.messages import Recipient, SenderIdentity
from mailer.models import Contact, Organization, User


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


def recipient_for(session: Session, email: str) -> tuple[Recipient, str]:
    """The contact with address `email` as a campaign would address it (send id 0), and the
    username of its organization's account manager ("" when it has none)."""
    row = session.execute(
        select(
            literal(0).label("send_id"),
            Contact.email,
            Contact.id.label("contact_id"),
            Contact.first_name,
            Contact.last_name,
            Contact.title,
            Contact.needs_smtputf8,
            Organization.name.label("org_name"),
            Organization.industry,
            Organization.benefit_eligible_employees,
            Organization.city,
            Organization.state,
            Organization.kind,
            User.display_name.label("manager_name"),
            User.email.label("manager_email"),
            User.phone.label("manager_phone"),
            User.username.label("manager_username"),
        )
        .join(Organization, Organization.id == Contact.organization_id)
        .outerjoin(User, User.id == Organization.account_manager_id)
        .where(Contact.email == email.strip())
    ).first()
    if row is None:
        raise NotFoundError(f"no contact with email {email!r}; check the address or import it")
    return recipient_from_row(row), row.manager_username or ""
