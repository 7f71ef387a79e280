"""Helpers shared by the CLI commands: the runtime, the acting user, JSON output."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy.orm import Session

from mailer.access import Actor
from mailer.access.cli import cli_actor as _cli_actor
from mailer.audit import cli_actor
from mailer.config import Settings
from mailer.runtime import Runtime, open_runtime


def runtime(*, check_schema: bool = True) -> Runtime:
    """The runtime for this command (one per process, built on first use)."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    key = "mailer_runtime"
    if key not in root.meta:
        rt = open_runtime(Settings.from_env(), check_schema=check_schema)
        root.meta[key] = rt
        root.call_on_close(rt.close)
    return root.meta[key]


def actor(settings: Settings) -> str:
    """Who the audit log names for this command: MAILER_USER, else the OS user."""
    return settings.user or cli_actor()


def acting(session: Session, username: str | None = None) -> Actor:
    """The mailer user this command acts as: --as, else MAILER_USER; refused when neither is
    set or the user is unknown or disabled."""
    return _cli_actor(session, username or runtime().settings.user)


def current_actor(username: str | None = None) -> Actor:
    """The acting user, resolved in a short session of its own (for core functions that take
    the runtime rather than a session)."""
    with runtime().sessions() as session:
        return acting(session, username)


def read_password_stdin() -> str:
    """The first line of standard input, as a password (never a command-line argument, which
    other users of the machine can read in the process list)."""
    import sys

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError("--password-stdin given but standard input held no password")
    return password


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


as_option = click.option(
    "--as",
    "username",
    envvar="MAILER_USER",
    default="",
    metavar="USERNAME",
    help="The mailer user to act as (default: $MAILER_USER).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def parse_params(items: tuple[str, ...]) -> dict[str, str]:
    """`--param KEY=VALUE` options as a dict."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        params[key.strip()] = value
    return params


#: `--as` for commands that also take a USERNAME argument.
acting_option = click.option(
    "--as",
    "as_username",
    envvar="MAILER_USER",
    default="",
    metavar="USERNAME",
    help="The mailer user to act as (default: $MAILER_USER).",
)
