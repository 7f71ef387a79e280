"""Who is acting (`Actor`) and the one check every core function makes (`require`).

A refusal is audited like an action: an `AuditEvent` with action `denied` naming the actor, the
action refused, the object and the reason. The event must outlive the caller's transaction, which
usually rolls back when PermissionDeniedError propagates, so it is written on a connection of its
own once that transaction ends (or at once when none is open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, insert
from sqlalchemy.orm import Session, SessionTransaction

from mailer.enums import Role
from mailer.errors import PermissionDeniedError
from mailer.models import AuditEvent, utcnow

#: Where the entry point learned who the actor is.
VIA = ("cli", "web", "api", "system")

#: `session.info` key holding refusals to write once the current transaction ends.
_PENDING_DENIALS = "mailer.access.pending_denials"


@dataclass(frozen=True)
class Actor:
    """An authenticated user (or the system itself) and where the request came from."""

    user_id: int | None
    username: str
    role: Role
    via: str  # "cli" | "web" | "api" | "system"
    ip: str | None = None
    #: An admin who must enroll TOTP (required for admins) before anything else: `require`
    #: refuses them every action but `ACTIONS_WHILE_ENROLLING`.
    must_enroll: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def describe(self) -> str:
        return f"user {self.username!r} (role {self.role.value})"


#: The service itself: schedulers, sweeps, workers. Acts with admin rights; audited by name.
SYSTEM = Actor(user_id=None, username="system", role=Role.ADMIN, via="system")

#: Which roles may perform each action when the caller does not decide (`allowed=None`).
#: Actions not listed are admin-only: a forgotten entry refuses rather than allows.
ROLES_FOR_ACTION: dict[str, frozenset[Role]] = {
    "audience.preview": frozenset(Role),
    "audience.count": frozenset(Role),
    "campaign.create": frozenset(Role),
    "campaign.view": frozenset(Role),
    "campaign.launch": frozenset(Role),
    "campaign.change": frozenset(Role),
    "contacts.view": frozenset(Role),
    "contacts.import": frozenset({Role.ADMIN, Role.ACCOUNT_MANAGER}),
    "template.view": frozenset(Role),
    "template.preview": frozenset(Role),
    "template.edit": frozenset({Role.ADMIN, Role.MARKETING}),
    "policy.view": frozenset(Role),
    "session.own": frozenset(Role),
    "token.own": frozenset(Role),
    "totp.own": frozenset(Role),
}


#: Why an admin who has not enrolled TOTP, while it is required, is refused.
ENROLL_FIRST = (
    "every admin must sign in with an authenticator app (TOTP), and you have not set one up: "
    "open /admin/account and set it up, then try again"
)
#: What an admin who must enroll TOTP may still do: enroll, and see or end their own sessions.
ACTIONS_WHILE_ENROLLING = frozenset({"totp.own", "session.own"})


def role_allows(role: Role, action: str) -> bool:
    return role in ROLES_FOR_ACTION.get(action, frozenset({Role.ADMIN}))


def require(
    session: Session,
    actor: Actor,
    action: str,
    *,
    object_type: str,
    object_id: str | int | None = None,
    allowed: bool | None = None,
    reason: str = "",
) -> None:
    """Raise PermissionDeniedError (and audit a `denied` event) unless `actor` may do `action`.

    `allowed` is the caller's own verdict (ownership, scope); when None the role table
    `ROLES_FOR_ACTION` decides. `reason` says why it was refused, in words a user can act on.
    An actor who `must_enroll` is refused everything but `ACTIONS_WHILE_ENROLLING`.
    """
    if actor.must_enroll and action not in ACTIONS_WHILE_ENROLLING:
        allowed = False
        reason = ENROLL_FIRST
    elif allowed is None:
        allowed = role_allows(actor.role, action)
        if not allowed and not reason:
            needed = " or ".join(
                sorted(r.value for r in ROLES_FOR_ACTION.get(action, {Role.ADMIN}))
            )
            reason = f"{action} needs the role {needed}"
    if allowed:
        return
    reason = reason or f"{actor.describe()} may not {action}"
    _audit_denial(session, actor, action, object_type, object_id, reason)
    raise PermissionDeniedError(f"{actor.describe()}: {reason}")


def deny(
    session: Session,
    actor: Actor,
    action: str,
    reason: str,
    *,
    object_type: str,
    object_id: str | int | None = None,
) -> PermissionDeniedError:
    """Audit a refusal decided by the caller and return the error for it to raise."""
    _audit_denial(session, actor, action, object_type, object_id, reason)
    return PermissionDeniedError(f"{actor.describe()}: {reason}")


def audit(
    session: Session,
    actor: Actor,
    action: str,
    *,
    object_type: str = "",
    object_id: str | int | None = "",
    **details: Any,
) -> AuditEvent:
    """Record an action by `actor` in the audit log, in the caller's transaction."""
    event_row = AuditEvent(
        actor=actor.username,
        action=action,
        object_type=object_type,
        object_id="" if object_id is None else str(object_id),
        details={"via": actor.via, **details},
        ip=actor.ip or "",
    )
    session.add(event_row)
    return event_row


def audit_as(
    session: Session,
    name: str,
    action: str,
    *,
    object_type: str = "",
    object_id: str | int | None = "",
    ip: str = "",
    **details: Any,
) -> AuditEvent:
    """Record an action by someone who is not (yet) an actor: a sign-in attempt, a bootstrap."""
    event_row = AuditEvent(
        actor=name[:100],
        action=action,
        object_type=object_type,
        object_id="" if object_id is None else str(object_id)[:100],
        details=details,
        ip=ip[:45],
    )
    session.add(event_row)
    return event_row


def _audit_denial(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str | int | None,
    reason: str,
) -> None:
    values = {
        "at": utcnow(),
        "actor": actor.username[:100],
        "action": "denied",
        "object_type": object_type,
        "object_id": "" if object_id is None else str(object_id)[:100],
        "details": {"action": action, "reason": reason, "via": actor.via, "role": actor.role.value},
        "ip": actor.ip or "",
    }
    if session.in_transaction():
        session.info.setdefault(_PENDING_DENIALS, []).append(values)
    else:
        _write_denials(session, [values])


def _write_denials(session: Session, rows: list[dict[str, Any]]) -> None:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.begin() as conn:
        conn.execute(insert(AuditEvent), rows)


@event.listens_for(Session, "after_transaction_end")
def _flush_denials(session: Session, transaction: SessionTransaction) -> None:
    # Runs when the outermost transaction ends, whether committed or rolled back; by then
    # SQLite's write lock is released, so a connection of our own can write.
    if transaction.parent is not None:
        return
    rows = session.info.pop(_PENDING_DENIALS, None)
    if rows:
        _write_denials(session, rows)
