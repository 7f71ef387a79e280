"""The `mailer` command line. Errors become messages and exit codes here, in one place."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from mailer.errors import (
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

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(error: MailerError) -> int:
    return next(code for cls, code in EXIT_CODES if isinstance(error, cls))


class MailerGroup(click.Group):
    """A click group that turns MailerError into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exit_code_for(exc))


@click.group(cls=MailerGroup)
@click.version_option(package_name="mailer")
def main() -> None:
    """mailer: CPI's email and notification campaign service."""


def _register() -> None:
    from mailer.cli import (
        audience,
        campaign,
        check,
        contacts,
        database,
        demo,
        policy,
        retention,
        serve,
        suppressions,
        template,
        tokens,
        users,
        worker,
    )

    for module in (
        database,
        contacts,
        users,
        tokens,
        audience,
        template,
        campaign,
        policy,
        retention,
        suppressions,
        worker,
        serve,
        check,
        demo,
    ):
        for command in getattr(module, "COMMANDS", []):
            main.add_command(command)


_register()
