"""Signed-in browser sessions kept on the server: the cookie carries a random id, the database
its SHA-256, so a stolen database does not yield usable cookies and every session can be revoked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, audit, require
from mailer.access.totp import signed_in_actor
from mailer.config import Settings
from mailer.db import rows_changed
from mailer.models import LoginSession, User, utcnow

#: Random bytes in a session id (256 bits).
SESSION_ID_BYTES = 32

#: `last_seen_at` is written at most this often, so reading pages does not write every time.
LAST_SEEN_RESOLUTION_S = 60


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(
    session: Session, actor: Actor, *, ip: str | None = None, user_agent: str = ""
) -> str:
    """Start a session for `actor` (just authenticated) and return its id for the cookie.

    Call it at every sign-in: a fresh id each time, so an id planted before sign-in is useless.
    """
    if actor.user_id is None:
        raise ValueError("only a user can hold a session")
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    now = utcnow()
    session.add(
        LoginSession(
            id_hash=hash_session_id(session_id),
            user_id=actor.user_id,
            created_at=now,
            last_seen_at=now,
            ip=(ip or actor.ip or "")[:45],
            user_agent=user_agent[:500],
        )
    )
    session.flush()
    return session_id


def _find(session: Session, session_id: str) -> LoginSession | None:
    if not session_id or len(session_id) > 200:
        return None
    return session.scalar(
        select(LoginSession).where(LoginSession.id_hash == hash_session_id(session_id))
    )


def session_actor(
    session: Session,
    session_id: str,
    *,
    settings: Settings,
    ip: str | None = None,
    now: dt.datetime | None = None,
) -> Actor | None:
    """The actor a session cookie stands for, or None (unknown, revoked, expired, user disabled).

    Enforces the idle and absolute timeouts and records the visit; commit the session after.
    An admin without TOTP while it is required for admins gets an actor that `must_enroll`.
    """
    row = _find(session, session_id)
    if row is None or row.revoked_at is not None:
        return None
    now = now or utcnow()
    idle = dt.timedelta(seconds=settings.session_idle_timeout_s)
    absolute = dt.timedelta(seconds=settings.session_absolute_timeout_s)
    if now - row.last_seen_at > idle or now - row.created_at > absolute:
        row.revoked_at = now
        row.revoked_reason = "expired"
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if (now - row.last_seen_at).total_seconds() >= LAST_SEEN_RESOLUTION_S:
        row.last_seen_at = now
    return signed_in_actor(session, user, via="web", ip=ip)


def close_session(session: Session, session_id: str, *, actor: Actor | None = None) -> bool:
    """Sign out: revoke this session. True if it was open."""
    row = _find(session, session_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    row.revoked_reason = "logout"
    if actor is not None:
        audit(session, actor, "logout", object_type="user", object_id=actor.username)
    return True


def revoke_user_sessions(
    session: Session, user_id: int, reason: str, *, keep_id_hash: str | None = None
) -> int:
    """Revoke every open session of a user (no permission check: callers decided); a count."""
    stmt = (
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    if keep_id_hash:
        stmt = stmt.where(LoginSession.id_hash != keep_id_hash)
    return rows_changed(session.execute(stmt.execution_options(synchronize_session=False)))


def close_all_sessions(session: Session, actor: Actor, username: str | None = None) -> int:
    """ "Log out everywhere": revoke every session of `username` (default: the actor's own).

    Anyone may do it for themselves; only an admin for someone else.
    """
    target = username or actor.username
    if target != actor.username:
        require(
            session,
            actor,
            "user.logout_everywhere",
            object_type="user",
            object_id=target,
            reason="only an admin may sign another user out",
        )
    user = session.scalar(select(User).where(User.username == target))
    if user is None:
        from mailer.errors import NotFoundError

        raise NotFoundError(f"no user {target!r}; `mailer users list` shows them all")
    count = revoke_user_sessions(session, user.id, "logout_everywhere")
    audit(session, actor, "logout_everywhere", object_type="user", object_id=target, sessions=count)
    return count


@dataclass(frozen=True)
class SessionInfo:
    id: int
    username: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    ip: str
    user_agent: str
    revoked_at: dt.datetime | None
    revoked_reason: str


def list_sessions(
    session: Session,
    actor: Actor,
    username: str | None = None,
    *,
    include_closed: bool = False,
    settings: Settings | None = None,
) -> list[SessionInfo]:
    """Sessions of `username` (default: the actor's own; others' for admins), newest first.

    With `settings`, sessions past their timeouts count as closed.
    """
    target = username or actor.username
    if target != actor.username:
        require(
            session,
            actor,
            "user.list_sessions",
            object_type="user",
            object_id=target,
            reason="only an admin may see another user's sessions",
        )
    stmt = (
        select(LoginSession, User.username)
        .join(User, User.id == LoginSession.user_id)
        .where(User.username == target)
        .order_by(LoginSession.created_at.desc(), LoginSession.id.desc())
    )
    if not include_closed:
        stmt = stmt.where(LoginSession.revoked_at.is_(None))
    now = utcnow()
    infos = []
    for row, name in session.execute(stmt):
        if settings is not None and not include_closed:
            idle = dt.timedelta(seconds=settings.session_idle_timeout_s)
            absolute = dt.timedelta(seconds=settings.session_absolute_timeout_s)
            if now - row.last_seen_at > idle or now - row.created_at > absolute:
                continue
        infos.append(
            SessionInfo(
                id=row.id,
                username=name,
                created_at=row.created_at,
                last_seen_at=row.last_seen_at,
                ip=row.ip,
                user_agent=row.user_agent,
                revoked_at=row.revoked_at,
                revoked_reason=row.revoked_reason,
            )
        )
    return infos
