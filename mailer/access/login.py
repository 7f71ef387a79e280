"""Signing in with a username and password (and a TOTP code when the user has one).

`authenticate` hashes with argon2id, which takes about a tenth of a second: web handlers call it
in a thread (`run_in_threadpool`), never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access import totp
from mailer.access.actor import Actor, audit_as
from mailer.access.throttle import LoginThrottle
from mailer.access.users import (
    hash_password,
    password_needs_rehash,
    verify_password,
    verify_password_hash,
)
from mailer.config import Settings
from mailer.models import User
from mailer.sealing import SealError

#: What a failed sign-in shows: the same words whether the user exists or not.
INVALID = "wrong username or password"


@dataclass(frozen=True)
class LoginFailure:
    """Why a sign-in failed. `reason` is for code and the audit log; `message` for the person."""

    reason: str  # "invalid" | "throttled" | "totp_required" | "totp_invalid" | "totp_unreadable"
    message: str
    #: For "throttled": seconds before another try is accepted (an HTTP 429 Retry-After).
    retry_after_s: int | None = None


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # verified against for unknown usernames, so they take as long as known ones
    return hash_password("not-a-password-of-anyone")


def _dummy_verify(password: str) -> None:
    verify_password_hash(_dummy_hash(), password)


def authenticate(
    session: Session,
    username: str,
    password: str,
    ip: str,
    user_agent: str,
    *,
    throttle: LoginThrottle,
    settings: Settings,
    totp_code: str | None = None,
    via: str = "web",
) -> Actor | LoginFailure:
    """Check a sign-in; return the actor, or why not. Audited either way; commit the session.

    Unknown users, disabled users and wrong passwords all answer "wrong username or password".
    A user with TOTP enabled also needs `totp_code`; without one the answer is "totp_required"
    (the form then asks for the code) and no failure is counted. An accepted code reseals the
    stored secret under the current MAILER_SECRET_KEY when it was in clear or under an old key.
    An admin without TOTP while it is required signs in as an actor that `must_enroll`.
    """
    username = username.strip()
    # counted before the password is checked, so a burst of concurrent tries is held too
    wait_s, attempt = throttle.begin_attempt(ip, username)
    if wait_s:
        audit_as(
            session,
            username[:100],
            "login.throttled",
            object_type="user",
            object_id=username[:100],
            ip=ip,
            retry_after_s=wait_s,
            via=via,
        )
        minutes = (wait_s + 59) // 60
        return LoginFailure(
            "throttled",
            f"too many failed sign-ins for {username!r} from this address; try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}",
            retry_after_s=wait_s,
        )
    user = session.scalar(select(User).where(User.username == username)) if username else None
    if user is None or not user.password_hash:
        _dummy_verify(password)
        return _fail(
            session,
            username,
            ip,
            via,
            "unknown user" if user is None else "no password set",
        )
    if not verify_password(user, password):
        return _fail(session, username, ip, via, "wrong password")
    if not user.is_active:
        return _fail(session, username, ip, via, "user disabled")
    if user.totp_enabled:
        if not totp_code:
            throttle.forgive(ip, username, attempt)  # the form now asks for the code
            return LoginFailure(
                "totp_required", "enter the 6-digit code from your authenticator app"
            )
        try:
            accepted = totp.check_user_code(user, totp_code, settings=settings)
        except SealError as exc:
            _fail(session, username, ip, via, f"TOTP secret unreadable: {exc}")
            return LoginFailure(
                "totp_unreadable",
                "your authenticator cannot be checked (this server's secret key changed); "
                f"ask an admin to reset it (`mailer users reset-totp {user.username}`), then "
                "sign in and set it up again",
            )
        if not accepted:
            _fail(session, username, ip, via, "wrong TOTP code")
            return LoginFailure(
                "totp_invalid", "that code is wrong or already used; wait for the next one"
            )
    if password_needs_rehash(user):
        user.password_hash = hash_password(password)
    throttle.reset(ip, username)
    audit_as(
        session,
        user.username,
        "login",
        object_type="user",
        object_id=user.username,
        ip=ip,
        via=via,
        user_agent=user_agent[:200],
        second_factor=user.totp_enabled,
    )
    return totp.signed_in_actor(session, user, via=via, ip=ip)


def _fail(session: Session, username: str, ip: str, via: str, why: str) -> LoginFailure:
    audit_as(
        session,
        username[:100] or "(blank)",
        "login.failed",
        object_type="user",
        object_id=username[:100],
        ip=ip,
        reason=why,
        via=via,
    )
    return LoginFailure("invalid", INVALID)
