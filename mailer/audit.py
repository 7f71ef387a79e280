"""The audit log: every action by a person or a process, readable only by admins."""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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


@dataclass(frozen=True)
class AuditFilter:
    """What the audit log screen and API filter on; empty fields match everything."""

    actor: str = ""
    action: str = ""  #: exact, or a prefix ending in "." (e.g. "campaign.")
    object_type: str = ""
    object_id: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def search(
    session: Session, where: AuditFilter, *, limit: int = 100, before_id: int | None = None
) -> list[AuditEvent]:
    """Events matching `where`, newest first (keyset on id: pass the last id as `before_id`)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if where.actor:
        query = query.where(AuditEvent.actor == where.actor)
    if where.action.endswith("."):
        query = query.where(AuditEvent.action.startswith(where.action))
    elif where.action:
        query = query.where(AuditEvent.action == where.action)
    if where.object_type:
        query = query.where(AuditEvent.object_type == where.object_type)
    if where.object_id:
        query = query.where(AuditEvent.object_id == where.object_id)
    if where.since is not None:
        query = query.where(AuditEvent.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.at < where.until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query))
