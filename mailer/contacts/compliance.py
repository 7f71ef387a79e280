"""An admin's changes to a contact's mail on their behalf: opt out, opt back in, suppress,
unsuppress. Each needs a reason, which the audit log keeps with the change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import consent
from mailer.access.actor import Actor, audit, require
from mailer.addresses import normalize
from mailer.contacts.lookup import get_visible_contact
from mailer.deliverability.soft import marketing_suppressions
from mailer.enums import OptOutSource, SuppressionReason
from mailer.errors import MailerError, NotFoundError
from mailer.models import Contact, Suppression, utcnow

#: A reason has at least this many characters (after trimming spaces): enough to say why.
REASON_MIN_CHARS = 4
#: Longest reason kept; a longer one is refused, never cut short.
REASON_MAX_CHARS = 500
#: What a good reason looks like, for the error messages.
_REASON_EXAMPLE = "'asked by phone on 2026-11-30, ticket 4411'"


class ComplianceError(MailerError):
    """A consent or suppression change is missing its reason or names a bad address."""


def check_reason(reason: str) -> str:
    """The reason trimmed, or ComplianceError naming the `reason` field and what it needs.

    The one rule for every front end: the admin form's minlength/maxlength and the API schema
    are generated from REASON_MIN_CHARS and REASON_MAX_CHARS.
    """
    reason = reason.strip()
    if len(reason) < REASON_MIN_CHARS:
        given = f"has only {len(reason)} character(s)" if reason else "is empty"
        raise ComplianceError(
            f"the reason {given}: write at least {REASON_MIN_CHARS} characters saying why "
            f"(e.g. {_REASON_EXAMPLE}); the audit log keeps it with the change"
        )
    if len(reason) > REASON_MAX_CHARS:
        raise ComplianceError(
            f"the reason has {len(reason)} characters: keep it to {REASON_MAX_CHARS} (say why "
            "in a sentence and cite the ticket for the rest)"
        )
    return reason


def admin_opt_out(session: Session, actor: Actor, contact_id: int, scope: str, reason: str) -> bool:
    """Opt a contact out of `scope` on their behalf (admins only); False if already so."""
    get_visible_contact(session, actor, contact_id, action="consent.admin_change")
    require(
        session,
        actor,
        "consent.admin_change",
        object_type="contact",
        object_id=contact_id,
        reason="only an admin may change a contact's consent",
    )
    return consent.opt_out(
        session,
        contact_id=contact_id,
        scope=scope,
        source=OptOutSource.ADMIN,
        ip=actor.ip or "",
        user_agent=f"mailer {actor.via}",
        actor=actor.username,
        reason=check_reason(reason),
    )


def admin_opt_in(session: Session, actor: Actor, contact_id: int, scope: str, reason: str) -> bool:
    """Undo a contact's opt-out of `scope` (admins only, e.g. a written request to resume)."""
    get_visible_contact(session, actor, contact_id, action="consent.admin_change")
    require(
        session,
        actor,
        "consent.admin_change",
        object_type="contact",
        object_id=contact_id,
        reason="only an admin may change a contact's consent",
    )
    return consent.opt_in(
        session,
        contact_id=contact_id,
        scope=scope,
        source=OptOutSource.ADMIN,
        ip=actor.ip or "",
        user_agent=f"mailer {actor.via}",
        actor=actor.username,
        reason=check_reason(reason),
    )


def _address(email: str) -> str:
    try:
        return normalize(email).normalized
    except ValueError as exc:
        raise ComplianceError(f"{email!r} is not a valid email address: {exc}") from exc


def suppress_address(
    session: Session, actor: Actor, email: str, reason: str, *, address_hash: str
) -> bool:
    """Stop all mail to `email` (admins only); False if it was already suppressed.

    `address_hash` is the runtime's keyed hash of the address (`rt.hash_address(email)`).
    """
    require(
        session,
        actor,
        "suppression.add",
        object_type="suppression",
        reason="only an admin may suppress an address",
    )
    address = _address(email)
    why = check_reason(reason)
    if session.scalar(select(Suppression.id).where(Suppression.address_hash == address_hash)):
        return False
    row = Suppression(
        address=address,
        address_hash=address_hash,
        reason=SuppressionReason.MANUAL.value,
        created_at=utcnow(),
        detail=why,
    )
    session.add(row)
    session.flush()
    audit(
        session, actor, "suppression.add", object_type="suppression", object_id=row.id, reason=why
    )
    return True


def unsuppress_address(
    session: Session, actor: Actor, email: str, reason: str, *, address_hash: str
) -> None:
    """Let mail go to `email` again (admins only): the suppression row goes, the audit log
    keeps what it was and why it was lifted."""
    require(
        session,
        actor,
        "suppression.remove",
        object_type="suppression",
        reason="only an admin may lift a suppression",
    )
    _address(email)
    why = check_reason(reason)
    row = session.scalar(select(Suppression).where(Suppression.address_hash == address_hash))
    if row is None:
        raise NotFoundError(f"{email!r} is not suppressed")
    audit(
        session,
        actor,
        "suppression.remove",
        object_type="suppression",
        object_id=row.id,
        reason=why,
        was_reason=row.reason,
        was_created_at=row.created_at.isoformat(),
    )
    session.delete(row)


def _contact_address(
    session: Session, actor: Actor, contact_id: int, action: str
) -> tuple[str, str]:
    get_visible_contact(session, actor, contact_id, action=action)
    contact = session.get(Contact, contact_id)
    assert contact is not None
    return contact.email, contact.address_hash


def suppress_contact(session: Session, actor: Actor, contact_id: int, reason: str) -> bool:
    """Stop all mail to a contact's address (admins only); False if it was already suppressed."""
    email, address_hash = _contact_address(session, actor, contact_id, "suppression.add")
    return suppress_address(session, actor, email, reason, address_hash=address_hash)


def unsuppress_contact(session: Session, actor: Actor, contact_id: int, reason: str) -> bool:
    """Let mail go to a contact's address again (admins only); False if it was not blocked."""
    email, address_hash = _contact_address(session, actor, contact_id, "suppression.remove")
    if session.scalar(select(Suppression.id).where(Suppression.address_hash == address_hash)):
        unsuppress_address(session, actor, email, reason, address_hash=address_hash)
        return True
    check_reason(reason)
    return False


@dataclass(frozen=True)
class SuppressionListing:
    """One address mail no longer goes to: all mail (hard bounce, complaint, manual, invalid)
    or only marketing (a soft-bounce stop)."""

    address: str
    reason: str
    scope: str  # "all mail" | "marketing"
    since: dt.datetime
    detail: str


def list_suppressions(session: Session, actor: Actor) -> list[SuppressionListing]:
    """Every suppressed address with its reason, soft-bounce stops first, newest first
    (admins only: the list names addresses across every client)."""
    require(
        session,
        actor,
        "suppression.list",
        object_type="suppression",
        reason="only an admin may list suppressed addresses",
    )
    soft = [
        SuppressionListing(m.email, "soft_bounce", "marketing", m.since, m.reason)
        for m in marketing_suppressions(session)
    ]
    hard = [
        SuppressionListing(s.address or "(erased)", s.reason, "all mail", s.created_at, s.detail)
        for s in session.scalars(select(Suppression).order_by(Suppression.created_at.desc()))
    ]
    return soft + hard
