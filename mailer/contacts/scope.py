"""What an account manager may import: rows of their own clients only.

An account manager's file may create new clients (they become theirs) and update clients they
already manage; a row naming another manager, a prospect, an organization managed by someone
else, or an address that belongs to another organization's contact is refused with its row and
column, so no import ever moves a client or a contact away from its manager.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor
from mailer.contacts.rows import ParsedRow
from mailer.enums import OrganizationKind, Role
from mailer.models import Contact, Organization, User

#: Keys per IN (...) look-up.
_CHUNK = 1000


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def restrict_to_manager(session: Session, rows: list[ParsedRow], actor: Actor) -> None:
    """Add a row problem to every row an account manager may not import (others: no change)."""
    if actor.role is not Role.ACCOUNT_MANAGER:
        return
    rows = [r for r in rows if not r.problems]
    for row in rows:
        if row.account_manager and row.account_manager != actor.username:
            row.add_problem(
                "account_manager",
                row.account_manager,
                f"you ({actor.username}) may import only your own clients; leave the column "
                f"empty or write {actor.username!r}, or ask an admin to import this row",
            )
            continue
        kind = row.org.get("kind")
        if kind is not None and kind != OrganizationKind.CLIENT:
            row.add_problem(
                "kind",
                str(kind),
                "account managers import their own clients only; an admin imports prospects",
            )
            continue
        # the organizations of an account manager's file are theirs
        row.account_manager = actor.username
        row.org["account_manager_id"] = actor.user_id
    _refuse_others_organizations(session, [r for r in rows if not r.problems], actor)
    _refuse_others_contacts(session, [r for r in rows if not r.problems], actor)


def _refuse_others_organizations(session: Session, rows: list[ParsedRow], actor: Actor) -> None:
    external_ids = sorted({r.external_id for r in rows})
    owners: dict[str, tuple[int | None, str | None]] = {}
    for part in _chunks(external_ids):
        found = session.execute(
            select(Organization.external_id, Organization.account_manager_id, User.username)
            .outerjoin(User, User.id == Organization.account_manager_id)
            .where(Organization.external_id.in_(part))
        )
        owners.update({ext: (manager_id, name) for ext, manager_id, name in found})
    for row in rows:
        if row.external_id not in owners:
            continue
        manager_id, name = owners[row.external_id]
        if manager_id != actor.user_id:
            whose = f"a client of {name!r}" if name else "not assigned to you"
            row.add_problem(
                "external_id",
                row.external_id,
                f"organization {row.external_id} is {whose}; an account manager cannot import "
                "it or move it to themselves (ask an admin)",
            )


def _refuse_others_contacts(session: Session, rows: list[ParsedRow], actor: Actor) -> None:
    hashes = sorted({r.contact["address_hash"] for r in rows if "address_hash" in r.contact})
    elsewhere: dict[str, str] = {}
    for part in _chunks(hashes):
        found = session.execute(
            select(Contact.address_hash, Organization.external_id, Organization.account_manager_id)
            .join(Organization, Organization.id == Contact.organization_id)
            .where(Contact.address_hash.in_(part))
        )
        for address_hash, external_id, manager_id in found:
            if manager_id != actor.user_id:
                elsewhere[address_hash] = external_id
    for row in rows:
        owner = elsewhere.get(row.contact.get("address_hash", ""))
        if owner is not None:
            row.add_problem(
                "email",
                row.contact.get("email", ""),
                f"this address is a contact of organization {owner}, which is not one "
                "of your clients; ask an admin to move it",
            )
