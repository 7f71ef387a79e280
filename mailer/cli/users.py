"""`mailer users …`: the people who use mailer."""

from __future__ import annotations

import sys

import click

from mailer import users
from mailer.cli._common import actor, echo_json, json_option, runtime
from mailer.enums import Role


@click.group("users")
def users_group() -> None:
    """Create and list users (admins, marketing, account managers)."""


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
@json_option
def create_command(
    username: str,
    role: str,
    display_name: str,
    email: str,
    phone: str,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Create the user USERNAME (recorded in the audit log)."""
    password: str | None = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin given but standard input held no password")
    rt = runtime()
    with rt.sessions.begin() as session:
        user = users.create_user(
            session,
            username=username,
            display_name=display_name,
            email=email,
            role=role,
            phone=phone,
            password=password,
            actor=actor(rt.settings),
        )
        created = {"username": user.username, "role": user.role, "email": user.email}
    if as_json:
        echo_json({**created, "display_name": display_name, "has_password": bool(password)})
    else:
        click.echo(f"created user {created['username']} ({created['role']}, {created['email']})")


@users_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """List users."""
    rt = runtime()
    with rt.sessions() as session:
        rows = [
            {
                "username": u.username,
                "display_name": u.display_name,
                "email": u.email,
                "phone": u.phone,
                "role": u.role,
                "has_password": bool(u.password_hash),
                "created_at": u.created_at.isoformat(),
            }
            for u in users.list_users(session)
        ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no users yet: create one with `mailer users create`")
    for row in rows:
        click.echo(
            f"{row['username']:<20} {row['role']:<16} {row['display_name']} <{row['email']}>"
        )


COMMANDS = [users_group]
