"""Who is calling: the admin's session cookie or the API's bearer token, turned into an actor.

The web only carries the session id and the token; users, passwords, sessions, tokens, TOTP and
throttling live in `mailer.access`, which this module calls (password checks in a thread, so
argon2's ~0.1 s never blocks the event loop).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from mailer.access import (
    Actor,
    LoginFailure,
    LoginThrottle,
    authenticate,
    close_all_sessions,
    close_session,
    open_session,
    session_actor,
    token_actor,
)
from mailer.runtime import Runtime

__all__ = ["Actor", "LoginFailure", "actor_for_session", "actor_for_token", "login"]


async def login(
    rt: Runtime,
    throttle: LoginThrottle,
    username: str,
    password: str,
    *,
    ip: str,
    user_agent: str,
    code: str = "",
) -> tuple[str, Actor] | LoginFailure:
    """A new session (id for the cookie, and its actor), or why the sign-in failed."""

    def run() -> tuple[str, Actor] | LoginFailure:
        with rt.sessions.begin() as session:
            found = authenticate(
                session,
                username,
                password,
                ip,
                user_agent,
                throttle=throttle,
                settings=rt.settings,
                totp_code=code or None,
                via="web",
            )
            if isinstance(found, LoginFailure):
                return found
            return open_session(session, found, ip=ip, user_agent=user_agent), found

    return await run_in_threadpool(run)


def actor_for_session(rt: Runtime, session_id: str, *, ip: str) -> Actor | None:
    with rt.sessions.begin() as session:
        return session_actor(session, session_id, settings=rt.settings, ip=ip)


def logout(rt: Runtime, session_id: str, actor: Actor) -> None:
    with rt.sessions.begin() as session:
        close_session(session, session_id, actor=actor)


def logout_everywhere(rt: Runtime, actor: Actor) -> int:
    with rt.sessions.begin() as session:
        return close_all_sessions(session, actor)


def actor_for_token(rt: Runtime, token: str, *, ip: str) -> Actor | None:
    with rt.sessions.begin() as session:
        return token_actor(session, token, ip=ip)
