"""Consent: opting out of a category (or all marketing) and back in, with proof of each change.

An opt-out names an address hash and a scope (`features`, `promotions`, `service` or
`all_marketing`). Rows are never deleted: opting back in sets `revoked_at`, so the history of
who said what, when, from which IP, stays as proof (CAN-SPAM, CPI's privacy policy). Every
change writes an AuditEvent carrying the IP. Nothing here commits: the caller's transaction
holds the change and its audit event together.
"""

from __future__ import annotations

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.enums import ALL_MARKETING, OPT_OUT_SCOPES, Category, OptOutSource, OrganizationKind
from mailer.errors import NotFoundError
from mailer.models import Contact, OptOut, Organization, utcnow

#: Longest user agent kept (the column's width); longer ones are cut, not refused.
USER_AGENT_MAX_CHARS = 500
#: Longest IP text kept: an IPv6 address with an embedded IPv4 part.
IP_MAX_CHARS = 45


def scopes_blocking(category: Category | str) -> tuple[str, ...]:
    """The opt-out scopes that stop mail of `category` (none for mandatory policy mail)."""
    category = Category(category)
    if category.is_marketing:
        return (str(category), ALL_MARKETING)
    if category.allows_opt_out:
        return (str(category),)
    return ()


def _check_scope(scope: str) -> str:
    if scope not in OPT_OUT_SCOPES:
        allowed = ", ".join(str(s) for s in OPT_OUT_SCOPES)
        raise ValueError(f"cannot opt out of {scope!r}: the scopes are {allowed}")
    return str(scope)


def _active(address_hash: str, scopes: tuple[str, ...]):  # type: ignore[no-untyped-def]
    return (
        (OptOut.address_hash == address_hash)
        & OptOut.category.in_(scopes)
        & OptOut.revoked_at.is_(None)
    )


def is_opted_out(session: Session, *, address_hash: str, category: Category | str) -> bool:
    """Whether mail of `category` must not go to the address (its own scope or all marketing)."""
    scopes = scopes_blocking(category)
    if not scopes:
        return False
    return bool(session.scalar(select(exists().where(_active(address_hash, scopes)))))


def is_contact_opted_out(session: Session, contact_id: int, category: Category | str) -> bool:
    """`is_opted_out` for a contact id; raises NotFoundError if the contact is gone."""
    return is_opted_out(
        session, address_hash=_contact(session, contact_id).address_hash, category=category
    )


def eligible_scopes(session: Session, contact_id: int) -> tuple[str, ...]:
    """The scopes a contact can switch: marketing for everybody, service for clients too."""
    return _scopes_for(_contact_and_kind(session, contact_id)[1])


def preferences(session: Session, contact_id: int) -> dict[str, bool]:
    """Each scope the contact can switch, True while they still receive it (not opted out).

    The scopes are those of `eligible_scopes`; `all_marketing` False means no marketing mail
    goes out whatever the per-category values say.
    """
    contact, kind = _contact_and_kind(session, contact_id)
    scopes = _scopes_for(kind)
    query = select(OptOut.category).where(_active(contact.address_hash, scopes))
    active = set(session.scalars(query))
    return {scope: scope not in active for scope in scopes}


def _scopes_for(organization_kind: str | None) -> tuple[str, ...]:
    scopes: list[str] = [ALL_MARKETING, Category.FEATURES, Category.PROMOTIONS]
    if organization_kind == OrganizationKind.CLIENT:
        scopes.append(Category.SERVICE)
    return tuple(str(s) for s in scopes)


def _contact_and_kind(session: Session, contact_id: int) -> tuple[Contact, str | None]:
    row = session.execute(
        select(Contact, Organization.kind)
        .join(Organization, Organization.id == Contact.organization_id)
        .where(Contact.id == contact_id)
    ).first()
    if row is None:
        raise NotFoundError(f"contact {contact_id} does not exist (deleted, or never imported)")
    return row[0], row[1]


def opt_out(
    session: Session,
    *,
    contact_id: int,
    scope: str,
    source: OptOutSource | str,
    ip: str,
    user_agent: str,
    send_id: int | None = None,
    actor: str,
    reason: str = "",
) -> bool:
    """Record that the contact wants no more mail of `scope`; False if that was already so.

    `reason` (for an admin's change on the contact's behalf) goes into the audit event.

    Idempotent: an active opt-out for the same address and scope is not duplicated, and a
    repeat writes no audit event. Raises NotFoundError if the contact does not exist.
    """
    scope = _check_scope(scope)
    source = OptOutSource(source)
    contact = _contact(session, contact_id, for_update=True)
    if session.scalar(select(exists().where(_active(contact.address_hash, (scope,))))):
        return False
    ip, user_agent = ip[:IP_MAX_CHARS], user_agent[:USER_AGENT_MAX_CHARS]
    row = OptOut(
        contact_id=contact.id,
        address_hash=contact.address_hash,
        category=scope,
        source=source,
        ip=ip,
        user_agent=user_agent,
        send_id=send_id or None,
    )
    session.add(row)
    session.flush()
    record(
        session,
        actor,
        "consent.opt_out",
        object_type="contact",
        object_id=contact.id,
        ip=ip,
        scope=scope,
        source=str(source),
        user_agent=user_agent,
        send_id=send_id or None,
        opt_out_id=row.id,
        **({"reason": reason} if reason else {}),
    )
    return True


def opt_in(
    session: Session,
    *,
    contact_id: int,
    scope: str,
    source: OptOutSource | str,
    ip: str,
    user_agent: str,
    actor: str,
    reason: str = "",
) -> bool:
    """Revoke the contact's active opt-outs of `scope`; False if there were none.

    The opt-out rows stay (with `revoked_at` set) as the record of what the contact asked.
    """
    scope = _check_scope(scope)
    source = OptOutSource(source)
    contact = _contact(session, contact_id, for_update=True)
    ip, user_agent = ip[:IP_MAX_CHARS], user_agent[:USER_AGENT_MAX_CHARS]
    revoked = session.execute(
        update(OptOut)
        .where(_active(contact.address_hash, (scope,)))
        .values(revoked_at=utcnow())
        .returning(OptOut.id)
    ).scalars()
    revoked_ids = sorted(revoked)
    if not revoked_ids:
        return False
    record(
        session,
        actor,
        "consent.opt_in",
        object_type="contact",
        object_id=contact.id,
        ip=ip,
        scope=scope,
        source=str(source),
        user_agent=user_agent,
        revoked_opt_out_ids=revoked_ids,
        **({"reason": reason} if reason else {}),
    )
    return True


def _contact(session: Session, contact_id: int, *, for_update: bool = False) -> Contact:
    query = select(Contact).where(Contact.id == contact_id)
    if for_update:
        # Serializes concurrent clicks for one contact on PostgreSQL, so a double submit
        # cannot insert two active rows; SQLite serializes writers on its own.
        query = query.with_for_update()
    contact = session.scalar(query)
    if contact is None:
        raise NotFoundError(f"contact {contact_id} does not exist (deleted, or never imported)")
    return contact
