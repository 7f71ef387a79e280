"""Time-based one-time passwords (RFC 6238, HMAC-SHA1, 30-second steps, 6 digits) as an
optional second factor, which an admin can require of every admin.

Secrets are stored sealed (`mailer.sealing`: AES-256-GCM under a key derived from
MAILER_SECRET_KEY, bound to the user's row). A secret stored in clear by an older version, or
sealed under a key that is now in MAILER_OLD_SECRET_KEYS, still works and is sealed again under
the current key the next time a code is accepted.

While TOTP is required for admins, an admin without it is an actor with `must_enroll`: the
core (`require`) refuses every action of theirs but enrolling, the admin app confines them to
their account page, and the API refuses tokens acting as them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote, urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, audit, require
from mailer.config import Settings
from mailer.enums import Role
from mailer.errors import MailerError, NotFoundError
from mailer.models import AccessSetting, User, utcnow
from mailer.sealing import Sealer, SealError

STEP_S = 30
DIGITS = 6
#: Codes from one step before or after now are accepted (clock drift, typing time).
DRIFT_STEPS = 1
#: The `access_settings` key: True when every admin must use TOTP.
REQUIRE_FOR_ADMINS = "totp_required_for_admins"
ISSUER = "CPI mailer"
#: The sealing purpose of TOTP secrets (their AES key is derived for this purpose only).
SEAL_PURPOSE = "totp"


class TotpError(MailerError):
    """A TOTP code is wrong, or enrollment is not possible as asked."""


def new_secret() -> str:
    """A random 160-bit secret in base32 (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def _key(secret: str) -> bytes:
    padded = secret.strip().replace(" ", "").upper()
    padded += "=" * (-len(padded) % 8)
    return base64.b32decode(padded)


def code_at(secret: str, step: int, digits: int = DIGITS) -> str:
    """The code for one time step (RFC 4226 HOTP over the step counter)."""
    digest = hmac.new(_key(secret), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def step_at(unix_time: float) -> int:
    return int(unix_time // STEP_S)


def matching_step(
    secret: str, code: str, *, now: float | None = None, after_step: int | None = None
) -> int | None:
    """The step `code` belongs to (within ±1 of now, later than `after_step`), else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    current = step_at(time.time() if now is None else now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if after_step is not None and step <= after_step:
            continue  # a code already used (or an older one) never works again
        if hmac.compare_digest(code_at(secret, step), code):
            return step
    return None


def provisioning_uri(secret: str, username: str, issuer: str = ISSUER) -> str:
    """The otpauth:// URI an authenticator app scans (as a QR code) to enroll."""
    label = quote(f"{issuer}:{username}")
    query = urlencode({"secret": secret, "issuer": issuer, "digits": DIGITS, "period": STEP_S})
    return f"otpauth://totp/{label}?{query}"


def sealer(settings: Settings) -> Sealer:
    """What seals and opens TOTP secrets under this installation's secret keys."""
    return Sealer.from_settings(settings, purpose=SEAL_PURPOSE)


def where(user_id: int) -> str:
    """Where a user's sealed secret lives: its associated data, so it opens in that row only."""
    return f"users.totp_secret:{user_id}"


def _store_secret(user: User, secret: str, settings: Settings) -> None:
    user.totp_secret = sealer(settings).seal(secret, where=where(user.id)) if secret else ""


def stored_secret(user: User, settings: Settings) -> str:
    """The user's secret in clear ("" if none), resealing it under the current key when it
    was stored in clear or under an old key; SealError if no configured key opens it."""
    if not user.totp_secret:
        return ""
    opened = sealer(settings).open(user.totp_secret, where=where(user.id))
    if not opened.is_current:
        _store_secret(user, opened.plaintext, settings)
    return opened.plaintext


def check_user_code(user: User, code: str, *, settings: Settings, now: float | None = None) -> bool:
    """Verify a sign-in code and burn its step (no replay); the caller commits.

    Raises SealError when the stored secret cannot be opened with the configured keys.
    """
    if not user.totp_enabled or not user.totp_secret:
        return False
    step = matching_step(
        stored_secret(user, settings), code, now=now, after_step=user.totp_last_step
    )
    if step is None:
        return False
    user.totp_last_step = step
    return True


def begin_enrollment(session: Session, actor: Actor, *, settings: Settings) -> str:
    """Give the actor a new (not yet enabled) secret; returns it for the QR code / manual entry.

    A user who already has TOTP on must turn it off first (or have an admin reset it): starting
    over here would let whoever holds a signed-in browser replace the second factor.
    """
    user = _own_user(session, actor)
    require(session, actor, "totp.own", object_type="user", object_id=user.username)
    if user.totp_enabled:
        raise TotpError(
            "your authenticator is already set up; to move it to a new device, ask an admin to "
            f"reset it (`mailer users reset-totp {user.username}`), then enroll again"
        )
    secret = new_secret()
    _store_secret(user, secret, settings)
    user.totp_enabled = False
    user.totp_last_step = None
    audit(session, actor, "totp.enroll_start", object_type="user", object_id=user.username)
    return secret


def enrollment_secret(session: Session, actor: Actor, *, settings: Settings) -> str:
    """The secret issued by `begin_enrollment` while it awaits its first code, else "".

    Once TOTP is on, the secret is never shown again.
    """
    user = _own_user(session, actor)
    if user.totp_enabled:
        return ""
    try:
        return stored_secret(user, settings)
    except SealError:
        return ""  # sealed under a key no longer configured: enrolling again issues a new one


def confirm_enrollment(
    session: Session, actor: Actor, code: str, *, settings: Settings, now: float | None = None
) -> None:
    """Enable TOTP once the user proves their app shows the right code."""
    user = _own_user(session, actor)
    if user.totp_enabled:
        raise TotpError("your authenticator is already set up; nothing to confirm")
    secret = enrollment_secret(session, actor, settings=settings)
    if not secret:
        raise TotpError("start enrolling first: no TOTP secret has been issued to you")
    step = matching_step(secret, code, now=now)
    if step is None:
        raise TotpError(
            "that code does not match: check the authenticator app shows 'CPI mailer' and the "
            "device clock is right, then type the current 6 digits"
        )
    user.totp_enabled = True
    user.totp_last_step = step
    audit(session, actor, "totp.enable", object_type="user", object_id=user.username)


def disable_totp(session: Session, actor: Actor, username: str | None = None) -> None:
    """Turn TOTP off for `username` (default: the actor). Admins may do it for anyone (a lost
    phone); an admin cannot drop their own while TOTP is required for admins."""
    target = username or actor.username
    if target != actor.username:
        require(
            session,
            actor,
            "totp.reset",
            object_type="user",
            object_id=target,
            reason="only an admin may turn off another user's second factor",
        )
    elif actor.role is Role.ADMIN and totp_required_for_admins(session):
        raise TotpError(
            "TOTP is required for every admin; another admin can reset yours if you lost it"
        )
    user = session.scalar(select(User).where(User.username == target))
    if user is None:
        raise NotFoundError(f"no user {target!r}")
    user.totp_enabled = False
    user.totp_secret = ""
    user.totp_last_step = None
    audit(session, actor, "totp.disable", object_type="user", object_id=target)


def totp_required_for_admins(session: Session) -> bool:
    row = session.get(AccessSetting, REQUIRE_FOR_ADMINS)
    return bool(row and row.value)


def set_totp_required_for_admins(session: Session, actor: Actor, required: bool) -> list[str]:
    """Require (or stop requiring) TOTP for every admin; audited. The admin turning it on must
    have it, so requiring it cannot lock them out.

    Returns the active admins without TOTP, who (while it is required) can do nothing but
    enroll at their next request, and whose API tokens are refused until they do.
    """
    require(
        session,
        actor,
        "settings.totp_required",
        object_type="setting",
        object_id=REQUIRE_FOR_ADMINS,
        reason="only an admin may change sign-in requirements",
    )
    if required and actor.user_id is not None:
        me = _own_user(session, actor)
        if not me.totp_enabled:
            raise TotpError(
                "set up your own authenticator app first (Your account → Two-step sign-in, "
                "or /admin/account), so requiring it of every admin cannot lock you out"
            )
    pending = admins_without_totp(session)
    row = session.get(AccessSetting, REQUIRE_FOR_ADMINS)
    before = bool(row and row.value)
    if before != bool(required):
        if row is None:
            row = AccessSetting(key=REQUIRE_FOR_ADMINS)
            session.add(row)
        row.value = bool(required)
        row.updated_at = utcnow()
        row.updated_by = actor.username
        audit(
            session,
            actor,
            "settings.change",
            object_type="setting",
            object_id=REQUIRE_FOR_ADMINS,
            before=before,
            after=bool(required),
            admins_without_totp=pending,
        )
    return pending


def admins_without_totp(session: Session) -> list[str]:
    """Usernames of the active admins who have not enrolled an authenticator."""
    return list(
        session.scalars(
            select(User.username)
            .where(
                User.role == Role.ADMIN.value,
                User.is_active.is_(True),
                User.totp_enabled.is_(False),
            )
            .order_by(User.username)
        )
    )


def user_must_enroll(session: Session, user: User) -> bool:
    """True when `user` is an admin without TOTP while TOTP is required for admins."""
    if user.role != Role.ADMIN.value or user.totp_enabled:
        return False
    return totp_required_for_admins(session)


def signed_in_actor(session: Session, user: User, *, via: str, ip: str | None) -> Actor:
    """The actor of `user` signed in (password, session cookie or API token) from `ip`: one
    who must enroll first when TOTP is required of them and they have none."""
    return Actor(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        via=via,
        ip=ip,
        must_enroll=user_must_enroll(session, user),
    )


def _own_user(session: Session, actor: Actor) -> User:
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None:
        raise NotFoundError(f"{actor.username!r} is not a mailer user with a second factor")
    return user
