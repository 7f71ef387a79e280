"""Who may do what: users and roles, the acting `Actor`, sign-in, sessions, API tokens, TOTP.

Every core function that acts for someone takes an `Actor` and calls `require` (or checks its own
scope and calls `deny`); a refusal raises PermissionDeniedError and is audited as `denied`.
"""

from typing import TYPE_CHECKING

from mailer.access.actor import SYSTEM, Actor, audit, deny, require, role_allows
from mailer.access.cli import actor_for_username, cli_actor
from mailer.lazy import lazy_exports

if TYPE_CHECKING:  # what type checkers and readers see
    from mailer.access.api_tokens import (
        ApiTokenError,
        CreatedToken,
        TokenInfo,
        create_api_token,
        list_tokens,
        revoke_token,
        token_actor,
    )
    from mailer.access.login import LoginFailure, authenticate
    from mailer.access.sessions import (
        SessionInfo,
        close_all_sessions,
        close_session,
        list_sessions,
        open_session,
        session_actor,
    )
    from mailer.access.throttle import (
        LoginThrottle,
        MemoryLoginThrottle,
        RedisLoginThrottle,
        make_login_throttle,
    )
    from mailer.access.users import (
        UserError,
        UserInfo,
        create_user,
        disable_user,
        enable_user,
        list_user_infos,
        set_password,
        set_role,
    )

__all__ = [
    "SYSTEM",
    "Actor",
    "ApiTokenError",
    "CreatedToken",
    "LoginFailure",
    "LoginThrottle",
    "MemoryLoginThrottle",
    "RedisLoginThrottle",
    "SessionInfo",
    "TokenInfo",
    "UserError",
    "UserInfo",
    "actor_for_username",
    "audit",
    "authenticate",
    "cli_actor",
    "close_all_sessions",
    "close_session",
    "create_api_token",
    "create_user",
    "deny",
    "disable_user",
    "enable_user",
    "list_sessions",
    "list_tokens",
    "list_user_infos",
    "make_login_throttle",
    "open_session",
    "require",
    "revoke_token",
    "role_allows",
    "session_actor",
    "set_password",
    "set_role",
    "token_actor",
]

# sign-in, sessions, API tokens, TOTP and user management load on first use: the CLI's other
# commands (`mailer policy publish` is on the clock) need only the actor (mailer.lazy)
__getattr__ = lazy_exports(
    __name__,
    {
        "mailer.access.api_tokens": [
            "ApiTokenError",
            "CreatedToken",
            "TokenInfo",
            "create_api_token",
            "list_tokens",
            "revoke_token",
            "token_actor",
        ],
        "mailer.access.login": ["LoginFailure", "authenticate"],
        "mailer.access.sessions": [
            "SessionInfo",
            "close_all_sessions",
            "close_session",
            "list_sessions",
            "open_session",
            "session_actor",
        ],
        "mailer.access.throttle": [
            "LoginThrottle",
            "MemoryLoginThrottle",
            "RedisLoginThrottle",
            "make_login_throttle",
        ],
        "mailer.access.users": [
            "UserError",
            "UserInfo",
            "create_user",
            "disable_user",
            "enable_user",
            "list_user_infos",
            "set_password",
            "set_role",
        ],
    },
)
