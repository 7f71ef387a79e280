"""Who is calling: the admin's session cookie or the API's bearer token, turned into an actor.

The web only carries the session id and the token; users, passwords, sessions, tokens and
throttling live in the core (`mailer.access`), which this module calls.
INTERIM: until mailer.access lands, a signed user id stands in for a session row.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from mailer.enums import Role
from mailer.models import User
from mailer.runtime import Runtime
from mailer.users import verify_password


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    username: str
    role: Role
    via: str
    ip: str | None = None


class LoginError(Exception):
    """Wrong username, password or code (never says which)."""


class LoginThrottledError(Exception):
    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many attempts; try again in {retry_after_s} s")


def _mac(rt: Runtime, value: str) -> str:
    key = rt.settings.secret_key.reveal().encode()
    return hmac.new(key, b"session:" + value.encode(), hashlib.sha256).hexdigest()


async def login(
    rt: Runtime, username: str, password: str, *, ip: str, user_agent: str, code: str = ""
) -> tuple[str, Actor]:
    """A new session for the user, or LoginError."""

    def check() -> User | None:
        with rt.sessions() as session:
            user = session.scalar(select(User).where(User.username == username.strip()))
            if user is None or not verify_password(user, password):
                return None
            session.expunge(user)
            return user

    user = await run_in_threadpool(check)
    if user is None:
        raise LoginError("wrong username or password")
    value = str(user.id)
    return f"{value}.{_mac(rt, value)}", Actor(user.id, user.username, Role(user.role), "web", ip)


def actor_for_session(rt: Runtime, session_id: str, *, ip: str, user_agent: str) -> Actor | None:
    value, _, mac = session_id.partition(".")
    if not value.isdigit() or not hmac.compare_digest(_mac(rt, value), mac):
        return None
    with rt.sessions() as session:
        user = session.get(User, int(value))
        if user is None:
            return None
        return Actor(user.id, user.username, Role(user.role), "web", ip)


def logout(rt: Runtime, session_id: str) -> None:
    return None


def logout_everywhere(rt: Runtime, actor: Actor) -> int:
    return 0


def actor_for_token(rt: Runtime, token: str, *, ip: str) -> Actor | None:
    return None
