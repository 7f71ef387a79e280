"""`mailer db …`: the schema."""

from __future__ import annotations

import click

from mailer import db
from mailer.audit import record
from mailer.cli._common import actor, runtime
from mailer.policy.text import ensure_first_version


@click.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target migration.")
def upgrade_command(revision: str) -> None:
    """Apply migrations (creates the database on first use)."""
    rt = runtime(check_schema=False)
    before = db.current_revision(rt.engine)
    db.upgrade(rt.engine, revision, settings=rt.settings)
    after = db.current_revision(rt.engine)
    if before != after:
        with rt.sessions.begin() as session:
            record(
                session,
                actor(rt.settings),
                "db.upgrade",
                object_type="schema",
                object_id=after or "",
                before=before,
                after=after,
            )
    # Version 1 of the privacy policy is data, not schema: the first upgrade records it.
    has_policy_table = db.has_table(rt.engine, "policy_versions")
    with rt.sessions.begin() as session:
        if has_policy_table and ensure_first_version(session, actor=actor(rt.settings)):
            click.echo("privacy policy version 1 recorded (mailer/data/privacy-policy-1.txt)")
    change = f"upgraded from {before or '(empty)'}" if before != after else "already current"
    click.echo(f"database at revision {after} ({change})")


@db_group.command("status")
def status_command() -> None:
    """Show the schema revision and whether it is current."""
    rt = runtime(check_schema=False)
    current, head = db.current_revision(rt.engine), db.head_revision()
    state = "current" if current == head else "behind: run `mailer db upgrade`"
    click.echo(f"revision {current or '(empty)'}, newest {head}: {state}")


COMMANDS = [db_group]
