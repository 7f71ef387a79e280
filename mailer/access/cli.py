"""The actor of a command-line run: the mailer user named by MAILER_USER (or --as).

The CLI is the operator's tool, so it does not ask for a password; it does insist the name is
a real, active user, and every core function checks that user's role exactly as for the web.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor
from mailer.enums import Role
from mailer.errors import NotFoundError, PermissionDeniedError
from mailer.models import User


def actor_for_username(session: Session, username: str, *, via: str = "cli") -> Actor:
    """The actor for an existing, active user, or an error saying how to fix it."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(
            f"no mailer user {username!r} (from MAILER_USER or --as): `mailer users list` shows "
            f"them; an admin creates one with `mailer users create {username} --role ROLE ...`"
        )
    if not user.is_active:
        raise PermissionDeniedError(
            f"mailer user {username!r} is disabled; an admin can run "
            f"`mailer users enable {username}`"
        )
    return Actor(user_id=user.id, username=user.username, role=Role(user.role), via=via)


def cli_actor(session: Session, username: str | None) -> Actor:
    """The actor for a CLI command; a clear refusal when MAILER_USER is unset."""
    if not username:
        raise PermissionDeniedError(
            "this command acts as a mailer user: set MAILER_USER=USERNAME (or pass --as "
            "USERNAME) to a user of the right role; `mailer users list` shows them"
        )
    return actor_for_username(session, username, via="cli")
