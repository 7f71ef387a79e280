"""Users of mailer (admins, marketing, account managers): creation, look-up, passwords."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.addresses import normalize
from mailer.audit import record
from mailer.enums import Role
from mailer.errors import MailerError, NotFoundError
from mailer.models import User

#: Usernames: lowercase letters, digits, dot, dash, underscore; they appear in CSV files and URLs.
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

_hasher = PasswordHasher()


class UserError(MailerError):
    """A user cannot be created as asked (bad username, role or email, or a duplicate)."""


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


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(user: User, password: str) -> bool:
    """True when `password` matches the user's argon2 hash (False if the user has none)."""
    if not user.password_hash:
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def create_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    email: str,
    role: str,
    phone: str = "",
    password: str | None = None,
    actor: str,
) -> User:
    """Add a user to `session` (flushed, not committed) and record it in the audit log."""
    check_username(username)
    role_value = check_role(role)
    if not display_name.strip():
        raise UserError(f"user {username!r} needs a display name (--name)")
    try:
        address = normalize(email).normalized
    except ValueError as exc:
        raise UserError(f"invalid email {email!r} for user {username!r}: {exc}") from exc
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username!r} already exists; `mailer users list` shows them all")
    user = User(
        username=username,
        display_name=display_name.strip(),
        email=address,
        phone=phone.strip(),
        role=role_value.value,
        password_hash=hash_password(password) if password else "",
    )
    session.add(user)
    session.flush()
    record(
        session,
        actor,
        "user.create",
        object_type="user",
        object_id=username,
        role=role_value.value,
        has_password=bool(password),
    )
    return user


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
