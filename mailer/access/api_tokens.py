"""Bearer tokens for the JSON API: `mlr_<public id>_<secret>`, shown once, stored as SHA-256.

A token acts as the user it belongs to, with that user's current role; a disabled user's tokens
stop working. Only admins create, list and revoke tokens; every change is audited.

While TOTP is required for admins, a token of an admin who has not enrolled stands for an actor
that `must_enroll`: the API refuses it (403, saying who must enroll) until that admin sets up an
authenticator, and no new token can be created for such an admin. A token holds admin rights
without any second factor at use, so it must at least belong to an admin who has one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, audit, require
from mailer.access.totp import signed_in_actor, user_must_enroll
from mailer.errors import MailerError, NotFoundError
from mailer.models import ApiToken, User, utcnow

PREFIX = "mlr_"
#: `mlr_` + 12 hex (public id) + `_` + 64 hex (256-bit secret).
TOKEN_RE = re.compile(r"mlr_([0-9a-f]{12})_([0-9a-f]{64})")
#: `last_used_at` is written at most this often.
LAST_USED_RESOLUTION_S = 60


class ApiTokenError(MailerError):
    """An API token cannot be created or revoked as asked."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never the secret)."""

    public_id: str
    name: str
    username: str
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


@dataclass(frozen=True)
class CreatedToken:
    """A new token: `token` is the only time the full secret exists outside its owner's hands."""

    token: str
    info: TokenInfo


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        public_id=row.public_id,
        name=row.name,
        username=username,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def create_api_token(
    session: Session,
    actor: Actor,
    *,
    name: str,
    username: str | None = None,
    expires_in_days: int | None = 90,
    now: dt.datetime | None = None,
) -> CreatedToken:
    """Create a token acting as `username` (default: the actor); admins only.

    `expires_in_days=None` makes a token that never expires (still revocable).
    """
    target = username or actor.username
    require(
        session,
        actor,
        "token.create",
        object_type="user",
        object_id=target,
        reason="only an admin may create API tokens",
    )
    name = name.strip()
    if not name or len(name) > 100:
        raise ApiTokenError(
            "give the token a name of 1-100 characters saying what uses it, e.g. 'crm-sync'"
        )
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        raise ApiTokenError(
            f"expiry of {expires_in_days} days: choose 1 to 3650 days (or no expiry)"
        )
    user = session.scalar(select(User).where(User.username == target))
    if user is None:
        raise NotFoundError(f"no user {target!r}; `mailer users list` shows them all")
    if not user.is_active:
        raise ApiTokenError(f"user {target!r} is disabled; enable them first")
    if user_must_enroll(session, user):
        raise ApiTokenError(
            f"{target!r} is an admin without an authenticator app while every admin must use "
            f"one: {target} signs in at /admin/ and sets it up first, then create the token"
        )
    now = now or utcnow()
    public_id = secrets.token_hex(6)
    secret = secrets.token_hex(32)
    row = ApiToken(
        public_id=public_id,
        secret_hash=_hash(secret),
        user_id=user.id,
        name=name,
        created_by=actor.username,
        created_at=now,
        expires_at=now + dt.timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(row)
    session.flush()
    audit(
        session,
        actor,
        "token.create",
        object_type="api_token",
        object_id=public_id,
        user=target,
        name=name,
        expires_at=row.expires_at.isoformat() if row.expires_at else None,
    )
    return CreatedToken(token=f"{PREFIX}{public_id}_{secret}", info=_info(row, user.username))


def token_actor(
    session: Session, bearer: str, *, ip: str | None = None, now: dt.datetime | None = None
) -> Actor | None:
    """The actor an `Authorization: Bearer …` value stands for, or None (malformed, unknown,
    wrong secret, expired, revoked, user disabled). Records its use; commit the session after."""
    value = bearer.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    match = TOKEN_RE.fullmatch(value)
    if match is None:
        return None
    public_id, secret = match.groups()
    row = session.scalar(select(ApiToken).where(ApiToken.public_id == public_id))
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    now = now or utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if (
        row.last_used_at is None
        or (now - row.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_S
    ):
        row.last_used_at = now
    return signed_in_actor(session, user, via="api", ip=ip)


def revoke_token(session: Session, actor: Actor, public_id: str) -> TokenInfo:
    """Revoke a token at once (admins only); revoking twice is harmless."""
    public_id = public_id.removeprefix(PREFIX).split("_")[0]
    require(
        session,
        actor,
        "token.revoke",
        object_type="api_token",
        object_id=public_id,
        reason="only an admin may revoke API tokens",
    )
    found = session.execute(
        select(ApiToken, User.username)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.public_id == public_id)
    ).one_or_none()
    if found is None:
        raise NotFoundError(f"no API token {public_id!r}; `mailer tokens list` shows them all")
    row, username = found
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(
            session,
            actor,
            "token.revoke",
            object_type="api_token",
            object_id=public_id,
            user=username,
        )
    return _info(row, username)


def list_tokens(
    session: Session, actor: Actor, *, username: str | None = None, include_revoked: bool = False
) -> list[TokenInfo]:
    """Tokens, newest first, optionally of one user (admins only)."""
    require(
        session,
        actor,
        "token.list",
        object_type="api_token",
        reason="only an admin may list API tokens",
    )
    stmt = (
        select(ApiToken, User.username)
        .join(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    )
    if username:
        stmt = stmt.where(User.username == username)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return [_info(row, name) for row, name in session.execute(stmt)]
