"""Retention: purge client and prospect data older than `settings.retention_years` (7).

CPI's privacy policy keeps client and prospect information "for up to seven (7) years". The
retention job (`mailer retention run`) deletes, in this order:

1. organizations whose last activity is older than the limit, with their contacts, tags and
   send-log rows. An organization's last activity is the latest of its own and its contacts'
   `last_activity_at`, its latest send (created, sent or updated, found by organization or by
   contact) and its `agreement_ended_on`;
2. contacts older than the limit in organizations that stay (a contact's last activity is its
   `last_activity_at` and its latest send), with their send-log rows;
3. send-log rows older than the limit everywhere (they hold the address in clear).

What survives, on purpose:

- opt-outs: the row stays as proof, with `contact_id` NULL (the foreign key is ON DELETE SET
  NULL) and its keyed `address_hash`, so a re-import of the address is still opted out. A mailto
  opt-out's `user_agent` ("mailto from ADDRESS") is cut to "mailto": it named an address in clear;
- suppressions keep their hash and reason (and keep suppressing) but lose the clear address
  and the detail (an SMTP reply usually quotes the address), when their contact is purged or,
  with no contact left, when the suppression is older than the limit;
- campaigns, even with no sends left: they are the record of what was launched (name, rule,
  template, who launched it), and hold no contact data;
- audit events: they are the activity log. Their details must not carry contact data (addresses,
  names); they carry ids, IPs and user agents — see `NOTES_ON_AUDIT_EVENTS`.

Work is done in chunks of `chunk_size` ids, one short transaction each, so a purge of millions
of rows holds no long lock and no list of every id in memory. A chunk of organizations or
contacts waits for the plans under way to commit, and a plan waits for such a chunk
(`db.send_log_writers`): a chunk takes a few seconds at most. A run interrupted half way leaves
every committed chunk purged and consistent; running it again finishes the job.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, audit, require
from mailer.db import rows_changed, send_log_writers
from mailer.models import (
    Contact,
    OptOut,
    Organization,
    OrganizationTag,
    Send,
    Suppression,
    utcnow,
)
from mailer.runtime import Runtime

__all__ = ["DEFAULT_CHUNK_SIZE", "RetentionReport", "cutoff_for", "run_retention"]

#: Ids per statement (and per transaction): small enough for SQLite's bound-parameter limit
#: and a short lock, large enough that a million-row purge takes a few hundred statements.
DEFAULT_CHUNK_SIZE = 5000

#: What audit events carry that touches a contact, as found when retention was written.
NOTES_ON_AUDIT_EVENTS = (
    "consent.opt_out / consent.opt_in: contact id, IP, user agent; template.preview: "
    "contact id; bounce.* (mailer.inbound.bounces): send id, status, whether the reported "
    "recipient matched. No addresses: ids of purged contacts name nobody once the rows are "
    "gone. (Opt-outs recorded by mail before this rule said 'mailto from ADDRESS'; retention "
    "cuts those to 'mailto'.)"
)

orgs = cast(Table, Organization.__table__)
contacts = cast(Table, Contact.__table__)
sends = cast(Table, Send.__table__)
tags = cast(Table, OrganizationTag.__table__)
opt_outs = cast(Table, OptOut.__table__)
suppressions = cast(Table, Suppression.__table__)


@dataclass
class RetentionReport:
    """What a retention run deleted or changed (or, with `is_dry_run`, would)."""

    cutoff: dt.datetime
    is_dry_run: bool
    organizations: int = 0
    contacts: int = 0
    organization_tags: int = 0
    sends: int = 0
    opt_outs_detached: int = 0
    suppressions_blanked: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and k != "is_dry_run"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.is_dry_run,
            "seconds": self.seconds,
            **self.counts(),
        }


def cutoff_for(now: dt.datetime, years: int) -> dt.datetime:
    """`now` minus `years` calendar years (29 February becomes 28 February)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


def run_retention(
    rt: Runtime,
    *,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    actor: Actor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> RetentionReport:
    """Purge what is older than `rt.settings.retention_years`; count only when `dry_run`.

    Admins only (a dry run too: its counts describe the whole database). Writes one
    AuditEvent ("retention.run", counts only) unless `dry_run`.
    """
    with rt.sessions() as session:
        require(
            session,
            actor,
            "retention.run",
            object_type="retention",
            reason="only an admin may run retention",
        )
    started = time.perf_counter()
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive: pass an aware UTC time")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: must be at least 1")
    cutoff = cutoff_for(now, rt.settings.retention_years)
    report = RetentionReport(cutoff=cutoff, is_dry_run=dry_run)
    if dry_run:
        with rt.sessions() as session:
            _count(session, cutoff, report)
    else:
        _purge(rt, cutoff, chunk_size, report)
    report.seconds = round(time.perf_counter() - started, 3)
    if not dry_run:
        details: dict[str, Any] = {"seconds": report.seconds, **report.counts()}
        with rt.sessions.begin() as session:
            audit(
                session,
                actor,
                "retention.run",
                object_type="retention",
                object_id=cutoff.date().isoformat(),
                retention_years=rt.settings.retention_years,
                **details,
            )
    return report


# --- what is old ---------------------------------------------------------------------------
# Each predicate takes the table (or alias) it judges and reads the others through fresh
# aliases: nested in a dry run's counts, a bare `contacts` inside EXISTS would silently
# correlate with an outer `contacts` and judge the wrong rows.


def _send_is_recent(send: Any, cutoff: dt.datetime) -> ColumnElement[bool]:
    return or_(send.c.created_at >= cutoff, send.c.sent_at >= cutoff, send.c.updated_at >= cutoff)


def _org_is_old(org: Any, cutoff: dt.datetime) -> ColumnElement[bool]:
    contact, send, contact_send = contacts.alias(), sends.alias(), sends.alias()
    recent_contact = exists().where(
        contact.c.organization_id == org.c.id, contact.c.last_activity_at >= cutoff
    )
    recent_send = exists().where(send.c.organization_id == org.c.id, _send_is_recent(send, cutoff))
    # a send keeps its contact id when a contact moves; find recent sends by contact too
    recent_contact_send = exists().where(
        contact.c.organization_id == org.c.id,
        contact_send.c.contact_id == contact.c.id,
        _send_is_recent(contact_send, cutoff),
    )
    return and_(
        org.c.last_activity_at < cutoff,
        or_(org.c.agreement_ended_on.is_(None), org.c.agreement_ended_on < cutoff.date()),
        ~recent_contact,
        ~recent_send,
        ~recent_contact_send,
    )


def _contact_is_old(contact: Any, cutoff: dt.datetime) -> ColumnElement[bool]:
    send = sends.alias()
    recent_send = exists().where(send.c.contact_id == contact.c.id, _send_is_recent(send, cutoff))
    return and_(contact.c.last_activity_at < cutoff, ~recent_send)


def _send_is_old(send: Any, cutoff: dt.datetime) -> ColumnElement[bool]:
    return and_(
        send.c.created_at < cutoff,
        or_(send.c.sent_at.is_(None), send.c.sent_at < cutoff),
        or_(send.c.updated_at.is_(None), send.c.updated_at < cutoff),
    )


def _stale_suppression(cutoff: dt.datetime) -> ColumnElement[bool]:
    contact = contacts.alias()
    has_contact = exists().where(contact.c.address_hash == suppressions.c.address_hash)
    return and_(suppressions.c.address != "", suppressions.c.created_at < cutoff, ~has_contact)


# --- dry run -------------------------------------------------------------------------------


def _count(session: Session, cutoff: dt.datetime, report: RetentionReport) -> None:
    # Correlated EXISTS, not IN (subquery): under OR, PostgreSQL runs an IN subquery too large
    # for work_mem once per outer row (406 s on 475k sends); EXISTS is a few index probes.
    def count(table: Table, *where: ColumnElement[bool]) -> int:
        return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)

    def org_is_doomed(org_id: Any) -> ColumnElement[bool]:
        org = orgs.alias()
        return exists().where(org.c.id == org_id, _org_is_old(org, cutoff))

    def contact_is_doomed(contact: Any) -> ColumnElement[bool]:
        return or_(org_is_doomed(contact.c.organization_id), _contact_is_old(contact, cutoff))

    def a_doomed_contact(*where: ColumnElement[bool], contact: Any) -> ColumnElement[bool]:
        return exists().where(*where, contact_is_doomed(contact))

    c1, c2, c3 = contacts.alias(), contacts.alias(), contacts.alias()
    report.organizations = count(orgs, _org_is_old(orgs, cutoff))
    report.contacts = count(contacts, contact_is_doomed(contacts))
    report.organization_tags = count(tags, org_is_doomed(tags.c.organization_id))
    report.sends = count(
        sends,
        or_(
            _send_is_old(sends, cutoff),
            org_is_doomed(sends.c.organization_id),
            a_doomed_contact(c1.c.id == sends.c.contact_id, contact=c1),
        ),
    )
    report.opt_outs_detached = count(
        opt_outs, a_doomed_contact(c2.c.id == opt_outs.c.contact_id, contact=c2)
    )
    report.suppressions_blanked = count(
        suppressions,
        suppressions.c.address != "",
        or_(
            a_doomed_contact(c3.c.address_hash == suppressions.c.address_hash, contact=c3),
            _stale_suppression(cutoff),
        ),
    )


# --- the purge -----------------------------------------------------------------------------


def _purge(rt: Runtime, cutoff: dt.datetime, chunk_size: int, report: RetentionReport) -> None:
    def purge_orgs(session: Session, ids: list[int]) -> None:
        their_contacts = select(contacts.c.id).where(contacts.c.organization_id.in_(ids))
        report.sends += _delete(
            session,
            delete(sends).where(
                or_(sends.c.organization_id.in_(ids), sends.c.contact_id.in_(their_contacts))
            ),
        )
        _forget_contacts(session, their_contacts, report)
        report.organization_tags += _delete(
            session, delete(tags).where(tags.c.organization_id.in_(ids))
        )
        report.contacts += _delete(
            session, delete(contacts).where(contacts.c.organization_id.in_(ids))
        )
        report.organizations += _delete(session, delete(orgs).where(orgs.c.id.in_(ids)))

    def purge_contacts(session: Session, ids: list[int]) -> None:
        report.sends += _delete(session, delete(sends).where(sends.c.contact_id.in_(ids)))
        _forget_contacts(session, select(contacts.c.id).where(contacts.c.id.in_(ids)), report)
        report.contacts += _delete(session, delete(contacts).where(contacts.c.id.in_(ids)))

    def purge_sends(session: Session, ids: list[int]) -> None:
        report.sends += _delete(session, delete(sends).where(sends.c.id.in_(ids)))

    def blank_suppressions(session: Session, ids: list[int]) -> None:
        report.suppressions_blanked += rows_changed(
            session.execute(
                update(suppressions).where(suppressions.c.id.in_(ids)).values(address="", detail="")
            )
        )

    # alone: no plan under way while these are chosen and deleted (`send_log_writers`)
    _in_chunks(rt, orgs.c.id, _org_is_old(orgs, cutoff), chunk_size, purge_orgs, alone=True)
    _in_chunks(
        rt, contacts.c.id, _contact_is_old(contacts, cutoff), chunk_size, purge_contacts, alone=True
    )
    _in_chunks(rt, sends.c.id, _send_is_old(sends, cutoff), chunk_size, purge_sends)
    _in_chunks(rt, suppressions.c.id, _stale_suppression(cutoff), chunk_size, blank_suppressions)


def _forget_contacts(session: Session, ids: Select[Any], report: RetentionReport) -> None:
    """Before contacts are deleted: blank their suppressions' addresses, count their opt-outs."""
    hashes = select(contacts.c.address_hash).where(contacts.c.id.in_(ids))
    report.suppressions_blanked += rows_changed(
        session.execute(
            update(suppressions)
            .where(suppressions.c.address_hash.in_(hashes), suppressions.c.address != "")
            .values(address="", detail="")
        )
    )
    theirs = opt_outs.c.contact_id.in_(ids)
    session.execute(
        update(opt_outs)
        .where(theirs, opt_outs.c.user_agent.like("mailto from %"))
        .values(user_agent="mailto")
    )
    # the rows themselves stay: ON DELETE SET NULL detaches them when the contact goes
    report.opt_outs_detached += int(
        session.scalar(select(func.count()).select_from(opt_outs).where(theirs)) or 0
    )


def _delete(session: Session, stmt: Any) -> int:
    return rows_changed(session.execute(stmt))


def _in_chunks(
    rt: Runtime,
    id_column: Any,
    condition: ColumnElement[bool],
    chunk_size: int,
    handle: Callable[[Session, list[int]], None],
    *,
    alone: bool = False,
) -> None:
    """Call `handle(session, ids)` on each chunk of matching ids, one transaction per chunk.

    `alone`: each chunk waits for the plans under way to commit and holds off new ones
    (`send_log_writers`) before its ids are chosen, so a contact about to be mailed counts as
    recent and stays, and no row is planned for a contact the chunk deletes."""
    # keyset paging on the id: each chunk starts where the last ended, no rescans
    last_id = 0
    while True:
        with rt.sessions.begin() as session:
            if alone:
                send_log_writers(session, alone=True)
            ids = list(
                session.scalars(
                    select(id_column)
                    .where(condition, id_column > last_id)
                    .order_by(id_column)
                    .limit(chunk_size)
                )
            )
            if not ids:
                return
            handle(session, ids)
        last_id = ids[-1]
