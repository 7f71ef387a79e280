"""Users of mailer (admins, marketing, account managers): creation, roles, passwords, disabling.

Every change takes the acting `Actor` and is checked here: only an admin manages users, except
that the very first admin may be created while no active admin exists (bootstrap).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, audit, audit_as, require
from mailer.access.sessions import revoke_user_sessions
from mailer.addresses import normalize
from mailer.enums import Role
from mailer.errors import MailerError, NotFoundError, PermissionDeniedError
from mailer.models import User, utcnow

#: Usernames: lowercase letters, digits, dot, dash, underscore; they appear in CSV files and URLs.
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

#: Shorter passwords are refused; length matters more than character classes (NIST SP 800-63B).
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()


class UserError(MailerError):
    """A user cannot be created or changed as asked (bad username, role, email or password)."""


def check_username(username: str) -> str:
    """Return `username` if well-formed, else raise UserError saying what is allowed."""
    if not USERNAME_RE.fullmatch(username):
        raise UserError(
            f"invalid username {username!r}: use 1-64 lowercase letters, digits, '.', '-' or '_', "
            "starting with a letter or digit"
        )
    return username


def check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise UserError(f"unknown role {role!r}: choose one of {choices}") from None


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            f"the password has {len(password)} characters; use at least {MIN_PASSWORD_LENGTH} "
            "(a few unrelated words make a good one)"
        )
    if len(password) > 1024:
        raise UserError("the password is longer than 1024 characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(user: User, password: str) -> bool:
    """True when `password` matches the user's argon2 hash (False if the user has none)."""
    return verify_password_hash(user.password_hash, password)


def verify_password_hash(password_hash: str, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(user: User) -> bool:
    """True when the stored hash used weaker parameters than today's (upgrade it at login)."""
    try:
        return _hasher.check_needs_rehash(user.password_hash)
    except InvalidHashError:
        return True


def add_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    email: str,
    role: str,
    phone: str = "",
    password: str | None = None,
    audited_as: str,
) -> User:
    """Insert a user without a permission check (callers have checked); audited as `audited_as`.

    Used by `create_user` and by processes that were themselves authorized (an import creating
    its account managers, the sample data).
    """
    check_username(username)
    role_value = check_role(role)
    if not display_name.strip():
        raise UserError(f"user {username!r} needs a display name (--name)")
    try:
        address = normalize(email).normalized
    except ValueError as exc:
        raise UserError(f"invalid email {email!r} for user {username!r}: {exc}") from exc
    if password is not None:
        check_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} already exists; `mailer users list` shows them all")
    user = User(
        username=username,
        display_name=display_name.strip(),
        email=address,
        phone=phone.strip(),
        role=role_value.value,
        password_hash=hash_password(password) if password else "",
        password_changed_at=utcnow() if password else None,
        is_active=True,
    )
    session.add(user)
    session.flush()
    audit_as(
        session,
        audited_as,
        "user.create",
        object_type="user",
        object_id=username,
        role=role_value.value,
        has_password=bool(password),
    )
    return user


def has_active_admin(session: Session) -> bool:
    count = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN.value, User.is_active.is_(True))
    )
    return bool(count)


def create_user(
    session: Session,
    actor: Actor | None,
    *,
    username: str,
    display_name: str,
    email: str,
    role: str,
    phone: str = "",
    password: str | None = None,
) -> User:
    """Create a user (admins only). While no active admin exists, anyone may create the first
    admin (`actor` may then be None): that is how an installation gets its first user."""
    bootstrap = not has_active_admin(session)
    if bootstrap:
        if role != Role.ADMIN.value:
            raise UserError(
                "there is no admin yet: create the first user as an admin "
                f"(`mailer users create NAME --role admin ...`), then {username!r}"
            )
        audited_as = actor.username if actor else "bootstrap"
    else:
        if actor is None:
            raise _needs_actor("create users")
        require(
            session,
            actor,
            "user.create",
            object_type="user",
            object_id=username,
            reason="only an admin may create users",
        )
        audited_as = actor.username
    user = add_user(
        session,
        username=username,
        display_name=display_name,
        email=email,
        role=role,
        phone=phone,
        password=password,
        audited_as=audited_as,
    )
    if bootstrap:
        audit_as(
            session, audited_as, "user.bootstrap_admin", object_type="user", object_id=username
        )
    return user


def _needs_actor(what: str) -> MailerError:
    return PermissionDeniedError(
        f"only an admin may {what}: sign in, or on the command line set MAILER_USER to an "
        "admin's username"
    )


def get_user(session: Session, username: str) -> User:
    """The user named `username`, or NotFoundError naming the command that creates it."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(
            f"no user {username!r}: create it with "
            f"`mailer users create {username} --role ROLE --name NAME --email EMAIL`"
        )
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def _admin_target(session: Session, actor: Actor, action: str, username: str) -> User:
    require(
        session,
        actor,
        action,
        object_type="user",
        object_id=username,
        reason="only an admin may manage users",
    )
    return get_user(session, username)


def _refuse_removing_last_admin(session: Session, user: User, what: str) -> None:
    if user.role != Role.ADMIN.value or not user.is_active:
        return
    others = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == Role.ADMIN.value, User.is_active.is_(True), User.id != user.id)
    )
    if not others:
        raise UserError(
            f"{user.username!r} is the last active admin; {what} would leave nobody able to "
            "manage users. Create or enable another admin first."
        )


def set_password(session: Session, actor: Actor, username: str, password: str) -> User:
    """Set a user's password (an admin for anyone, a user for themselves); signs them out
    everywhere, since whoever knew the old password may hold a session."""
    if actor.username != username:
        require(
            session,
            actor,
            "user.set_password",
            object_type="user",
            object_id=username,
            reason="only an admin may set another user's password",
        )
    user = get_user(session, username)
    check_password(password)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    revoked = revoke_user_sessions(session, user.id, "password_changed")
    audit(
        session,
        actor,
        "user.password_change",
        object_type="user",
        object_id=username,
        sessions_revoked=revoked,
    )
    return user


def disable_user(session: Session, actor: Actor, username: str) -> User:
    """Disable a user: no sign-in, sessions revoked, API tokens refused. Reversible."""
    user = _admin_target(session, actor, "user.disable", username)
    if not user.is_active:
        return user
    _refuse_removing_last_admin(session, user, "disabling them")
    user.is_active = False
    user.disabled_at = utcnow()
    revoked = revoke_user_sessions(session, user.id, "user_disabled")
    audit(
        session,
        actor,
        "user.disable",
        object_type="user",
        object_id=username,
        sessions_revoked=revoked,
    )
    return user


def enable_user(session: Session, actor: Actor, username: str) -> User:
    user = _admin_target(session, actor, "user.enable", username)
    if user.is_active:
        return user
    user.is_active = True
    user.disabled_at = None
    audit(session, actor, "user.enable", object_type="user", object_id=username)
    return user


def set_role(session: Session, actor: Actor, username: str, role: str) -> User:
    """Change a user's role (admins only); sessions and tokens read the role on every request,
    so it applies at once."""
    user = _admin_target(session, actor, "user.set_role", username)
    new_role = check_role(role)
    if user.role == new_role.value:
        return user
    if new_role is not Role.ADMIN:
        _refuse_removing_last_admin(session, user, "changing their role")
    before = user.role
    user.role = new_role.value
    audit(
        session,
        actor,
        "user.set_role",
        object_type="user",
        object_id=username,
        before=before,
        after=new_role.value,
    )
    return user


@dataclass(frozen=True)
class UserInfo:
    """What the user screens and `mailer users list` show (never the hashes or secrets)."""

    id: int
    username: str
    display_name: str
    email: str
    phone: str
    role: str
    is_active: bool
    has_password: bool
    totp_enabled: bool
    created_at: str
    password_changed_at: str | None


def user_info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        phone=user.phone,
        role=user.role,
        is_active=user.is_active,
        has_password=bool(user.password_hash),
        totp_enabled=user.totp_enabled,
        created_at=user.created_at.isoformat(),
        password_changed_at=(
            user.password_changed_at.isoformat() if user.password_changed_at else None
        ),
    )


def list_user_infos(session: Session, actor: Actor) -> list[UserInfo]:
    """Every user (admins only)."""
    require(session, actor, "user.list", object_type="user", reason="only an admin may list users")
    return [user_info(u) for u in list_users(session)]
