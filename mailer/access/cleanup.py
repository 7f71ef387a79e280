"""Forgetting sign-ins that can no longer be used: ended sessions and long-dead API tokens.

A session that was revoked or ran past its idle or absolute timeout can never be used again:
its row goes. An API token that expired or was revoked stays `TOKEN_KEEP_DAYS` so
`mailer tokens list` still shows why a script stopped working, then goes. The audit log keeps
what happened to both.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import rows_changed
from mailer.models import ApiToken, LoginSession

#: Days an expired or revoked API token is still listed before it is deleted.
TOKEN_KEEP_DAYS = 30


def clean_expired(session: Session, settings: Settings, now: dt.datetime) -> dict[str, int]:
    """Delete ended sessions and long-dead tokens; how many of each."""
    idle = now - dt.timedelta(seconds=settings.session_idle_timeout_s)
    absolute = now - dt.timedelta(seconds=settings.session_absolute_timeout_s)
    sessions = rows_changed(
        session.execute(
            delete(LoginSession).where(
                or_(
                    LoginSession.revoked_at.is_not(None),
                    LoginSession.last_seen_at < idle,
                    LoginSession.created_at < absolute,
                )
            )
        )
    )
    keep = now - dt.timedelta(days=TOKEN_KEEP_DAYS)
    tokens = rows_changed(
        session.execute(
            delete(ApiToken).where(or_(ApiToken.expires_at < keep, ApiToken.revoked_at < keep))
        )
    )
    return {"sessions": sessions, "api_tokens": tokens}
