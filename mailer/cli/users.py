"""`mailer users …`: the people who use mailer (admins manage them; the first admin bootstraps)."""

from __future__ import annotations

import click
from sqlalchemy.orm import Session

from mailer.access import Actor, totp, users
from mailer.access.sessions import close_all_sessions, list_sessions
from mailer.cli._common import (
    acting,
    acting_option,
    echo_json,
    json_option,
    read_password_stdin,
    runtime,
)
from mailer.enums import Role
from mailer.errors import MailerError


@click.group("users")
def users_group() -> None:
    """Manage users (admins only; the first admin may be created while there is none)."""


@users_group.command("create")
@click.argument("username")
@click.option(
    "--role",
    required=True,
    type=click.Choice([r.value for r in Role]),
    help="What the user may do.",
)
@click.option("--name", "display_name", required=True, help="Display name, e.g. 'Dana Rivera'.")
@click.option("--email", required=True, help="The user's email address.")
@click.option("--phone", default="", help="Phone number (shown in service mail signatures).")
@click.option(
    "--password-stdin", is_flag=True, help="Read a password from standard input (first line)."
)
@acting_option
@json_option
def create_command(
    username: str,
    role: str,
    display_name: str,
    email: str,
    phone: str,
    password_stdin: bool,
    as_username: str,
    as_json: bool,
) -> None:
    """Create the user USERNAME (admins only; recorded in the audit log).

    On a new installation, the first admin may be created without MAILER_USER.
    """
    password = read_password_stdin() if password_stdin else None
    rt = runtime()
    with rt.sessions.begin() as session:
        bootstrap = not users.has_active_admin(session)
        actor = (
            _bootstrap_actor(session, as_username) if bootstrap else acting(session, as_username)
        )
        user = users.create_user(
            session,
            actor,
            username=username,
            display_name=display_name,
            email=email,
            role=role,
            phone=phone,
            password=password,
        )
        created = {
            "username": user.username,
            "role": user.role,
            "email": user.email,
            "display_name": user.display_name,
            "has_password": password is not None,
            "is_first_admin": bootstrap,
        }
    if as_json:
        echo_json(created)
        return
    click.echo(f"created user {created['username']} ({created['role']}, {created['email']})")
    if bootstrap:
        click.echo(f"{username} is the first admin: set MAILER_USER={username}")


def _bootstrap_actor(session: Session, as_username: str) -> Actor | None:
    # the first admin: whoever MAILER_USER names, if that user exists, is recorded as creator
    try:
        return acting(session, as_username)
    except MailerError:
        return None


@users_group.command("list")
@json_option
@acting_option
def list_command(as_json: bool, as_username: str) -> None:
    """List users (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        infos = users.list_user_infos(session, acting(session, as_username))
    rows = [info.__dict__ for info in infos]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no users yet: create one with `mailer users create`")
    for row in rows:
        state = "" if row["is_active"] else "  (disabled)"
        click.echo(
            f"{row['username']:<20} {row['role']:<16} {row['display_name']} <{row['email']}>{state}"
        )


@users_group.command("disable")
@click.argument("username")
@acting_option
@json_option
def disable_command(username: str, as_username: str, as_json: bool) -> None:
    """Disable USERNAME: no sign-in, sessions ended, API tokens refused (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        users.disable_user(session, acting(session, as_username), username)
    _say(
        as_json,
        {"username": username, "is_active": False},
        f"disabled {username}; their sessions are signed out and API tokens refused",
    )


@users_group.command("enable")
@click.argument("username")
@acting_option
@json_option
def enable_command(username: str, as_username: str, as_json: bool) -> None:
    """Enable a disabled user again (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        users.enable_user(session, acting(session, as_username), username)
    _say(as_json, {"username": username, "is_active": True}, f"enabled {username}")


@users_group.command("set-role")
@click.argument("username")
@click.argument("role", type=click.Choice([r.value for r in Role]))
@acting_option
@json_option
def set_role_command(username: str, role: str, as_username: str, as_json: bool) -> None:
    """Change USERNAME's role to ROLE (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        users.set_role(session, acting(session, as_username), username, role)
    _say(as_json, {"username": username, "role": role}, f"{username} now has the role {role}")


@users_group.command("set-password")
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (first line)."
)
@acting_option
@json_option
def set_password_command(
    username: str, password_stdin: bool, as_username: str, as_json: bool
) -> None:
    """Set USERNAME's password (yourself, or anyone as an admin); signs them out everywhere."""
    if password_stdin:
        password = read_password_stdin()
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    rt = runtime()
    with rt.sessions.begin() as session:
        users.set_password(session, acting(session, as_username), username, password)
    _say(
        as_json,
        {"username": username, "password_changed": True},
        f"password of {username} changed; their sessions are signed out",
    )


@users_group.command("list-sessions")
@click.argument("username", required=False)
@click.option("--all", "include_closed", is_flag=True, help="Include ended sessions.")
@json_option
@acting_option
def list_sessions_command(
    username: str | None, include_closed: bool, as_json: bool, as_username: str
) -> None:
    """Signed-in browser sessions of USERNAME (default: yourself; others: admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        infos = list_sessions(
            session,
            acting(session, as_username),
            username,
            include_closed=include_closed,
            settings=rt.settings,
        )
    rows = [info.__dict__ for info in infos]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no open sessions")
    for row in rows:
        ended = (
            f"  ended {row['revoked_at']:%Y-%m-%d %H:%M} ({row['revoked_reason']})"
            if row["revoked_at"]
            else ""
        )
        click.echo(
            f"{row['id']:>6} {row['username']:<16} since {row['created_at']:%Y-%m-%d %H:%M} "
            f"last seen {row['last_seen_at']:%Y-%m-%d %H:%M} {row['ip']:<15} "
            f"{row['user_agent'][:40]}{ended}"
        )


@users_group.command("logout-everywhere")
@click.argument("username", required=False)
@acting_option
@json_option
def logout_everywhere_command(username: str | None, as_username: str, as_json: bool) -> None:
    """Sign USERNAME (default: yourself) out of every browser session."""
    rt = runtime()
    with rt.sessions.begin() as session:
        actor = acting(session, as_username)
        count = close_all_sessions(session, actor, username)
    who = username or actor.username
    _say(
        as_json,
        {"username": who, "sessions_closed": count},
        f"signed {who} out of {count} session(s)",
    )


@users_group.command("reset-totp")
@click.argument("username")
@acting_option
@json_option
def reset_totp_command(username: str, as_username: str, as_json: bool) -> None:
    """Turn off USERNAME's second factor (admins; e.g. a lost phone): they enroll again."""
    rt = runtime()
    with rt.sessions.begin() as session:
        totp.disable_totp(session, acting(session, as_username), username)
    _say(as_json, {"username": username, "totp_enabled": False}, f"TOTP of {username} is off")


@users_group.command("require-totp")
@click.argument("state", type=click.Choice(["on", "off"]))
@acting_option
@json_option
def require_totp_command(state: str, as_username: str, as_json: bool) -> None:
    """Require a TOTP second factor of every admin at sign-in (on), or stop requiring it."""
    rt = runtime()
    with rt.sessions.begin() as session:
        pending = totp.set_totp_required_for_admins(
            session, acting(session, as_username), state == "on"
        )
    text = f"TOTP for admins: {state}"
    if state == "on" and pending:
        text += (
            f"\nnot set up yet: {', '.join(pending)}; until they set it up they can only "
            "enroll (at /admin/account) and API tokens acting as them are refused"
        )
    _say(
        as_json,
        {"totp_required_for_admins": state == "on", "admins_without_totp": pending},
        text,
    )


def _say(as_json: bool, data: dict[str, object], text: str) -> None:
    if as_json:
        echo_json(data)
    else:
        click.echo(text)


COMMANDS = [users_group]
