"""The audit log: every action by a person or a process, readable only by admins."""

from __future__ import annotations

import getpass
from typing import Any

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
