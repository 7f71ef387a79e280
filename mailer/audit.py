"""The audit log: every action by a person or a process, readable only by admins."""

from __future__ import annotations

import base64
import datetime as dt
import getpass
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, require
from mailer.errors import MailerError
from mailer.models import AuditEvent


def cli_actor() -> str:
    """The OS user running a CLI command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(
    session: Session,
    actor: str,
    action: str,
    *,
    object_type: str = "",
    object_id: str | int = "",
    ip: str = "",
    **details: Any,
) -> AuditEvent:
    """Add one audit event to `session` (committed with the change it describes)."""
    event = AuditEvent(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        details=details,
        ip=ip,
    )
    session.add(event)
    return event


class AuditQueryError(MailerError):
    """An audit log query has a bad limit or cursor."""


#: Largest page of audit events one query returns.
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditQuery:
    """Filters for the audit log; every one is optional."""

    actor: str | None = None
    #: An exact action ("login.failed") or a family ending in ".*" or "." ("campaign.*",
    #: "campaign.").
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEvent]
    #: Pass back as `cursor` for the next (older) page; None on the last page.
    next_cursor: str | None


def query_events(
    session: Session,
    actor: Actor,
    filters: AuditQuery | None = None,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> AuditPage:
    """Audit events, newest first, a page at a time (admins only).

    Keyset paging on the id: a page never repeats or skips events written meanwhile.
    """
    require(
        session,
        actor,
        "audit.read",
        object_type="audit_log",
        reason="only an admin may read the audit log",
    )
    if not 1 <= limit <= MAX_PAGE:
        raise AuditQueryError(f"limit={limit}: choose 1 to {MAX_PAGE}")
    f = filters or AuditQuery()
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if cursor:
        stmt = stmt.where(AuditEvent.id < _decode_cursor(cursor))
    if f.actor:
        stmt = stmt.where(AuditEvent.actor == f.actor)
    if f.action:
        if f.action.endswith((".*", ".")):
            family = f.action.removesuffix("*")
            stmt = stmt.where(AuditEvent.action.startswith(family, autoescape=True))
        else:
            stmt = stmt.where(AuditEvent.action == f.action)
    if f.object_type:
        stmt = stmt.where(AuditEvent.object_type == f.object_type)
    if f.object_id:
        stmt = stmt.where(AuditEvent.object_id == f.object_id)
    if f.since:
        stmt = stmt.where(AuditEvent.at >= f.since)
    if f.until:
        stmt = stmt.where(AuditEvent.at < f.until)
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, _encode_cursor(rows[-1].id) if more and rows else None)


def cursor_before(event_id: int) -> str:
    """The cursor of the page of events older than `event_id` (for a caller keeping ids)."""
    return _encode_cursor(event_id)


def _encode_cursor(event_id: int) -> str:
    return base64.urlsafe_b64encode(f"a{event_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("a"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError):
        raise AuditQueryError(
            f"cursor {cursor!r} is not one this service handed out; start again without it"
        ) from None
