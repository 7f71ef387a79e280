"""Write checked rows: load what exists by key, diff in Python, write the difference in bulk.

Organizations are keyed by external_id, contacts by the keyed hash of their lowercased address
(the same key opt-outs use), so `Pat@X.example` and `pat@x.example` are one contact. Unchanged
rows are not touched at all: importing a file twice leaves every byte as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from mailer.models import Contact, Organization, OrganizationTag

if TYPE_CHECKING:
    from mailer.contacts.importer import ImportReport
    from mailer.contacts.rows import ParsedRow

ORGS = Organization.__table__
CONTACTS = Contact.__table__
TAGS = OrganizationTag.__table__

#: Keys per `IN (…)` look-up (SQLite allows 32,766 parameters; smaller keeps plans cheap).
LOOKUP_CHUNK = 1000
#: Rows per executemany call.
WRITE_CHUNK = 5000


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def write_rows(
    conn: Connection,
    header: list[str],
    rows: list[ParsedRow],
    now: dt.datetime,
    report: ImportReport,
    progress: Callable[[str, int, int], None] | None = None,
) -> None:
    """Upsert the organizations and contacts of `rows`; counts go into `report`."""
    first_by_org: dict[str, ParsedRow] = {}
    for row in rows:
        first_by_org.setdefault(row.external_id, row)
    org_ids = _write_organizations(conn, list(first_by_org.values()), "tags" in header, now, report)
    _write_contacts(conn, rows, org_ids, now, report, progress)


def _load(conn: Connection, table: Any, key: Any, keys: Iterable[str], extra: list[Any]) -> dict:
    found: dict[str, Any] = {}
    key_list = sorted(set(keys))
    for part in chunks(key_list, LOOKUP_CHUNK):
        stmt = select(table.c.id, key, *extra).where(key.in_(part)).order_by(table.c.id)
        for record in conn.execute(stmt):
            found.setdefault(record[1], record)
    return found


def _write_organizations(
    conn: Connection, orgs: list[ParsedRow], has_tags: bool, now: dt.datetime, report: ImportReport
) -> dict[str, int]:
    fields = sorted(orgs[0].org) if orgs else []
    existing = _load(
        conn, ORGS, ORGS.c.external_id, (o.external_id for o in orgs), [ORGS.c[f] for f in fields]
    )
    old_tags = _load_tags(conn, [r.id for r in existing.values()]) if has_tags else {}

    org_ids: dict[str, int] = {}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    retag: list[tuple[int, tuple[str, ...]]] = []
    for org in orgs:
        old = existing.get(org.external_id)
        if old is None:
            inserts.append(
                {**org.org, "external_id": org.external_id, **_stamps(now), "created_at": now}
            )
            continue
        org_ids[org.external_id] = old.id
        is_changed = any(getattr(old, f) != org.org[f] for f in fields)
        is_retagged = has_tags and old_tags.get(old.id, ()) != (org.tags or ())
        if is_changed or is_retagged:
            updates.append({"b_id": old.id, **org.org, **_stamps(now)})
        if is_retagged:
            retag.append((old.id, org.tags or ()))
    for part in chunks(inserts, WRITE_CHUNK):
        stmt = insert(ORGS).returning(ORGS.c.id, ORGS.c.external_id, sort_by_parameter_order=True)
        for org_id, external_id in conn.execute(stmt, list(part)):
            org_ids[external_id] = org_id
    if updates:
        values = {f: bindparam(f) for f in [*fields, "updated_at", "last_activity_at"]}
        stmt = update(ORGS).where(ORGS.c.id == bindparam("b_id")).values(values)
        for part in chunks(updates, WRITE_CHUNK):
            conn.execute(stmt, list(part))
    if has_tags:
        retag += [
            (org_ids[o.external_id], o.tags or ()) for o in orgs if o.external_id not in existing
        ]
        _write_tags(conn, retag, [org_id for org_id, _ in retag if org_id in old_tags])
    report.organizations_created = len(inserts)
    report.organizations_updated = len(updates)
    report.organizations_unchanged = len(orgs) - len(inserts) - len(updates)
    return org_ids


def _stamps(now: dt.datetime) -> dict[str, dt.datetime]:
    return {"updated_at": now, "last_activity_at": now}


def _load_tags(conn: Connection, org_ids: list[int]) -> dict[int, tuple[str, ...]]:
    grouped: dict[int, list[str]] = {}
    for part in chunks(org_ids, LOOKUP_CHUNK):
        stmt = select(TAGS.c.organization_id, TAGS.c.tag).where(TAGS.c.organization_id.in_(part))
        for org_id, tag in conn.execute(stmt):
            grouped.setdefault(org_id, []).append(tag)
    return {k: tuple(sorted(v)) for k, v in grouped.items()}


def _write_tags(
    conn: Connection, retag: list[tuple[int, tuple[str, ...]]], clear_ids: list[int]
) -> None:
    for part in chunks(clear_ids, LOOKUP_CHUNK):
        conn.execute(delete(TAGS).where(TAGS.c.organization_id.in_(part)))
    tag_rows = [{"organization_id": org_id, "tag": tag} for org_id, tags in retag for tag in tags]
    for part in chunks(tag_rows, WRITE_CHUNK):
        conn.execute(insert(TAGS), list(part))


def _write_contacts(
    conn: Connection,
    rows: list[ParsedRow],
    org_ids: dict[str, int],
    now: dt.datetime,
    report: ImportReport,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    fields = (
        ["organization_id", "email", "needs_smtputf8", *sorted(rows[0].contact)] if rows else []
    )
    fields = sorted(set(fields) - {"address_hash"})
    existing = _load(
        conn,
        CONTACTS,
        CONTACTS.c.address_hash,
        (r.contact["address_hash"] for r in rows),
        [CONTACTS.c[f] for f in fields],
    )
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for row in rows:
        values = {**row.contact, "organization_id": org_ids[row.external_id]}
        old = existing.get(values["address_hash"])
        if old is None:
            inserts.append({**values, **_stamps(now), "created_at": now})
        elif any(getattr(old, f) != values[f] for f in fields):
            del values["address_hash"]
            updates.append({"b_id": old.id, **values, **_stamps(now)})
    total, done = len(inserts) + len(updates), 0
    for part in chunks(inserts, WRITE_CHUNK):
        conn.execute(insert(CONTACTS), list(part))
        done += len(part)
        if progress:
            progress("writing", done, total)
    if updates:
        values = {f: bindparam(f) for f in [*fields, "updated_at", "last_activity_at"]}
        stmt = update(CONTACTS).where(CONTACTS.c.id == bindparam("b_id")).values(values)
        for part in chunks(updates, WRITE_CHUNK):
            conn.execute(stmt, list(part))
            done += len(part)
            if progress:
                progress("writing", done, total)
    report.contacts_created = len(inserts)
    report.contacts_updated = len(updates)
    report.contacts_unchanged = len(rows) - len(inserts) - len(updates)
