"""`mailer tokens …`: bearer tokens for the JSON API (admins only)."""

from __future__ import annotations

import click

from mailer.access import create_api_token, list_tokens, revoke_token
from mailer.cli._common import acting, acting_option, echo_json, runtime


@click.group("tokens")
def tokens_group() -> None:
    """Create, list and revoke API tokens (admins only)."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--user", "username", default=None, help="The user the token acts as (default: you).")
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Days until it expires (default: MAILER_API_TOKEN_DAYS, 90).",
)
@click.option("--no-expiry", is_flag=True, help="A token that never expires (still revocable).")
@acting_option
def create_command(
    name: str, username: str | None, expires_days: int | None, no_expiry: bool, as_username: str
) -> None:
    """Create a token called NAME; it is printed once and never shown again."""
    rt = runtime()
    days = None if no_expiry else (expires_days or rt.settings.api_token_days)
    with rt.sessions.begin() as session:
        created = create_api_token(
            session,
            acting(session, as_username),
            name=name,
            username=username,
            expires_in_days=days,
        )
    info = created.info
    expiry = f"expires {info.expires_at:%Y-%m-%d}" if info.expires_at else "never expires"
    click.echo(f"token {info.public_id} ({info.name}) for {info.username}, {expiry}.", err=True)
    click.echo("Copy it now: it is shown only this once.", err=True)
    click.echo(created.token)


@tokens_group.command("list")
@click.option("--user", "username", default=None, help="Only this user's tokens.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@acting_option
def list_command(
    username: str | None, include_revoked: bool, as_json: bool, as_username: str
) -> None:
    """List API tokens (never their secrets)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        infos = list_tokens(
            session,
            acting(session, as_username),
            username=username,
            include_revoked=include_revoked,
        )
    rows = [info.__dict__ for info in infos]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no API tokens: create one with `mailer tokens create NAME`")
    for info in infos:
        state = "revoked" if info.is_revoked else ("expired" if info.is_expired() else "active")
        expires = f"{info.expires_at:%Y-%m-%d}" if info.expires_at else "never"
        used = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never"
        click.echo(
            f"{info.public_id}  {info.name:<20} {info.username:<16} {state:<8} "
            f"expires {expires}  last used {used}"
        )


@tokens_group.command("revoke")
@click.argument("token_id")
@acting_option
def revoke_command(token_id: str, as_username: str) -> None:
    """Revoke the token TOKEN_ID (its public id, as listed) at once."""
    rt = runtime()
    with rt.sessions.begin() as session:
        info = revoke_token(session, acting(session, as_username), token_id)
    click.echo(f"revoked token {info.public_id} ({info.name}) of {info.username}")


COMMANDS = [tokens_group]
