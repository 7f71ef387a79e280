"""Soft bounces per address (STANDARDS §6): 3 over at least 7 days with no delivery in between
stop the address's marketing mail.

What counts as a soft bounce: a 4xx reply still refused after the last retry (the send fails
with "gave up"), a 5xx that is not the address's fault but the mailbox's (5.2.2 full), and an
asynchronous report — a DSN `delayed`, or `failed` with a 4.x.x status — or a provider's soft
bounce event. The same send counts once, however many reports name it.

What resets the count: a delivery to the address — an SMTP acceptance recorded by a worker, or a
provider's `delivered` event — of a send other than the one that bounced (a relay accepts a
message before it bounces it later; that acceptance proves nothing).

The stop is an opt-out of all marketing with source `soft_bounce` (like a complaint's, it never
stops service or policy mail, which an ISP's soft refusal does not justify). It is visible in
`mailer suppressions list` and lifted by an admin with `mailer suppressions lift`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.orm import Session

from mailer.access import Actor, require
from mailer.audit import record
from mailer.config import Settings
from mailer.db import insert_ignoring_duplicates
from mailer.enums import ALL_MARKETING, OptOutSource
from mailer.errors import NotFoundError
from mailer.models import Contact, OptOut, SoftBounce, utcnow

#: Who the audit log names for suppressions made here.
ACTOR = "bounce-processor"


def note_soft_bounce(
    session: Session,
    settings: Settings,
    *,
    email: str,
    address_hash: str,
    send_id: int | None,
    detail: str,
    now: dt.datetime,
) -> bool:
    """Count one soft bounce of an address; True if it now stops the address's marketing mail."""
    insert_ignoring_duplicates(
        session,
        cast(Table, SoftBounce.__table__),
        [
            {
                "address_hash": address_hash,
                "count": 0,
                "first_at": now,
                "last_at": now,
                "last_detail": "",
            }
        ],
    )
    row = session.scalars(
        select(SoftBounce).where(SoftBounce.address_hash == address_hash).with_for_update()
    ).one()
    if row.count and send_id is not None and row.last_send_id == send_id:
        return False  # the same message reported again (delayed, then failed): counted once
    delivered_since = (
        row.delivered_at is not None
        and row.delivered_at >= row.last_at
        and (send_id is None or row.delivered_send_id != send_id)
    )
    if row.count == 0 or delivered_since:
        row.count, row.first_at = 1, now
    else:
        row.count += 1
    row.last_at, row.last_send_id, row.last_detail = now, send_id, detail[:1000]
    row.delivered_at = row.delivered_send_id = None
    span = row.last_at - row.first_at
    if row.count < settings.soft_bounce_limit or span < dt.timedelta(
        days=settings.soft_bounce_min_days
    ):
        return False
    return _stop_marketing(session, email, address_hash, row, now)


def _stop_marketing(
    session: Session, email: str, address_hash: str, row: SoftBounce, now: dt.datetime
) -> bool:
    already = session.scalar(
        select(OptOut.id).where(
            OptOut.address_hash == address_hash,
            OptOut.category == ALL_MARKETING,
            OptOut.revoked_at.is_(None),
        )
    )
    if already is not None:
        return False
    contact_id = session.scalar(select(Contact.id).where(Contact.address_hash == address_hash))
    reason = (
        f"{row.count} soft bounces from {row.first_at:%Y-%m-%d} to {row.last_at:%Y-%m-%d} with "
        f"no delivery in between; last: {row.last_detail}"
    )
    session.add(
        OptOut(
            contact_id=contact_id,
            address_hash=address_hash,
            category=ALL_MARKETING,
            opted_out_at=now,
            source=OptOutSource.SOFT_BOUNCE.value,
            user_agent=reason[:500],
            send_id=row.last_send_id,
        )
    )
    record(
        session,
        ACTOR,
        "suppression.soft_bounce",
        object_type="contact",
        object_id=contact_id or "",
        reason=reason,
        soft_bounces=row.count,
    )
    return True


def note_delivered(
    session: Session,
    delivered: Sequence[tuple[str, int | None]],
    now: dt.datetime,
    hash_address: Callable[[str], str],
) -> int:
    """Deliveries (address, send id) start counting again; returns the counts reset.

    One indexed read per call; a write only for addresses with a count. On the hot path a
    worker passes only the deliveries whose claim saw a count for the address (or could not
    tell), so a slice without one costs nothing here (`delivery/deliver.py`, `soft_counted`).
    """
    if not delivered:
        return 0
    by_hash = {hash_address(email): send_id for email, send_id in delivered}
    counted = list(
        session.scalars(
            select(SoftBounce.address_hash).where(SoftBounce.address_hash.in_(list(by_hash)))
        )
    )
    for address_hash in sorted(counted):  # one order: two workers never deadlock here
        session.execute(
            update(SoftBounce)
            .where(SoftBounce.address_hash == address_hash)
            .values(delivered_at=now, delivered_send_id=by_hash[address_hash])
        )
    return len(counted)


@dataclass(frozen=True)
class MarketingSuppression:
    """An address whose marketing mail stopped after soft bounces."""

    opt_out_id: int
    contact_id: int | None
    email: str
    since: dt.datetime
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "opt_out_id": self.opt_out_id,
            "contact_id": self.contact_id,
            "email": self.email,
            "since": self.since.isoformat(),
            "reason": self.reason,
        }


def marketing_suppressions(session: Session) -> list[MarketingSuppression]:
    """Every address whose marketing mail soft bounces stopped, newest first."""
    rows = session.execute(
        select(OptOut, Contact.email)
        .outerjoin(Contact, Contact.address_hash == OptOut.address_hash)
        .where(
            OptOut.source == OptOutSource.SOFT_BOUNCE.value,
            OptOut.revoked_at.is_(None),
        )
        .order_by(OptOut.opted_out_at.desc(), OptOut.id.desc())
    )
    return [
        MarketingSuppression(o.id, o.contact_id, email or "(erased)", o.opted_out_at, o.user_agent)
        for o, email in rows
    ]


def lift_marketing_suppression(
    session: Session, actor: Actor, *, address_hash: str, note: str = ""
) -> int:
    """An admin lifts a soft-bounce stop: marketing mail goes again and the count restarts."""
    require(session, actor, "suppression.lift", object_type="address")
    lifted = list(
        session.scalars(
            update(OptOut)
            .where(
                OptOut.address_hash == address_hash,
                OptOut.source == OptOutSource.SOFT_BOUNCE.value,
                OptOut.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
            .returning(OptOut.id)
        )
    )
    if not lifted:
        raise NotFoundError(
            "that address has no soft-bounce suppression; `mailer suppressions list` shows them"
        )
    session.execute(delete(SoftBounce).where(SoftBounce.address_hash == address_hash))
    contact_id = session.scalar(select(Contact.id).where(Contact.address_hash == address_hash))
    record(
        session,
        actor.username,
        "suppression.lift",
        object_type="contact",
        object_id=contact_id or "",
        ip=actor.ip or "",
        opt_out_ids=lifted,
        note=note,
    )
    return len(lifted)
