"""Helpers shared by the CLI commands: the runtime, the acting user, JSON output."""

from __future__ import annotations

import json
from typing import Any

import click

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
