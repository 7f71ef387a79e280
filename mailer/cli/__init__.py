"""The `mailer` command line. Errors become messages and exit codes here, in one place.

With `--json` anywhere on the command line, an error is printed to standard output as
`{"error": "…", "exit_code": N}` (plus `outcome` and `campaign_id` when `campaign wait` ends
without the campaign completing) instead of a red line on standard error.

Each command's module is imported only when that command runs (`COMMAND_MODULES`): start-up
is on the clock for `mailer policy publish`, whose first notice must leave within a second,
and importing every command (the web app, templates, the delivery engine, rich tables) took
most of that (docs/performance.md §1).
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import click

from mailer.errors import (
    CampaignNotCompletedError,
    ConfigError,
    ContactImportError,
    MailerError,
    NotFoundError,
    PermissionDeniedError,
    SchemaBehindError,
)

#: Exit codes by error class, most specific first.
EXIT_CODES: list[tuple[type[MailerError], int]] = [
    (SchemaBehindError, 3),
    (PermissionDeniedError, 4),
    (NotFoundError, 5),
    (ConfigError, 6),
    (ContactImportError, 65),
    (MailerError, 1),
]
#: `mailer campaign wait`: how the wait ended, when not with the campaign completed (exit 0).
WAIT_EXIT_CODES = {
    "cancelled": 10,
    "failed": 11,
    "missed": 12,
    "timeout": 13,
    "draft": 14,
}

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(error: MailerError) -> int:
    if isinstance(error, CampaignNotCompletedError):
        return WAIT_EXIT_CODES[error.outcome]
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


#: Each top-level command and the module of `mailer.cli` that defines it (in its `COMMANDS`).
COMMAND_MODULES = {
    "audience": "audience",
    "audit": "compliance",
    "campaign": "campaign",
    "check-config": "check",
    "contact": "compliance",
    "db": "database",
    "demo": "demo",
    "import": "contacts",
    "inbound": "serve",
    "policy": "policy",
    "retention": "retention",
    "sample-data": "contacts",
    "scheduler": "worker",
    "serve": "serve",
    "status": "worker",
    "suppressions": "suppressions",
    "template": "template",
    "tokens": "tokens",
    "users": "users",
    "worker": "worker",
}


class MailerGroup(click.Group):
    """A click group that imports a command's module when the command is looked up (see the
    module doc), and turns errors into a one-line message (or JSON) and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = _import_command_module(f"mailer.cli.{module_name}")
        return next(c for c in module.COMMANDS if c.name == cmd_name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["mailer.argv"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            code = exit_code_for(exc)
            if not _wants_json(ctx):
                click.secho(f"error: {exc}", fg="red", err=True)
                sys.exit(code)
            extra: dict[str, Any] = {}
            if isinstance(exc, CampaignNotCompletedError):
                extra = {"outcome": exc.outcome, "campaign_id": exc.campaign_id}
            elif isinstance(exc, ContactImportError):
                extra = {"problems": [vars(p) for p in exc.problems]}
            _echo_error(str(exc), code, **extra)
            sys.exit(code)
        except click.ClickException as exc:
            if not _wants_json(ctx):
                raise
            _echo_error(exc.format_message(), exc.exit_code)
            sys.exit(exc.exit_code)


def _import_command_module(name: str) -> ModuleType:
    """Import a command's module (SQLAlchemy, the models, … on first use) with the garbage
    collector off, then freeze what it made: imports make hundreds of thousands of objects
    that live as long as the process, and collecting among them cost ~50 ms of the import's
    ~0.45 s of CPU, and a full collection scanning them later up to 0.17 s mid-publish
    (docs/performance.md §7). Frozen, they are out of every later collection. Garbage already
    there is collected first (a few ms at start-up), so none of it is frozen with them: a
    process that runs commands after other work (the tests) would keep it for good."""
    if name in sys.modules:
        return sys.modules[name]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        return importlib.import_module(name)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def _wants_json(ctx: click.Context) -> bool:
    argv: list[str] = ctx.meta.get("mailer.argv", [])
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _echo_error(message: str, code: int, **extra: Any) -> None:
    data = {"error": message, "exit_code": code, **extra}
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


@click.group(cls=MailerGroup)
@click.version_option(package_name="mailer")
def main() -> None:
    """mailer: CPI's email and notification campaign service."""
