"""`mailer retention run`: purge client and prospect data older than the retention limit."""

from __future__ import annotations

import click

from mailer.cli._common import acting_option, current_actor, echo_json, json_option, runtime
from mailer.retention import run_retention


@click.group("retention")
def retention_group() -> None:
    """Apply the privacy policy's retention limit (MAILER_RETENTION_YEARS, default 7)."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@json_option
@acting_option
def run_command(dry_run: bool, as_json: bool, as_username: str) -> None:
    """Delete organizations, contacts and send-log rows older than the limit.

    Opt-outs stay as hashed addresses (a re-import never re-subscribes anyone); suppressions
    lose their clear address but keep suppressing. One audit event records the counts.
    Admins only.
    """
    rt = runtime()
    report = run_retention(rt, dry_run=dry_run, actor=current_actor(as_username))
    if as_json:
        echo_json(report.as_dict())
        return
    verb = "would purge" if dry_run else "purged"
    click.echo(
        f"retention {rt.settings.retention_years} years: {verb} what was last active before "
        f"{report.cutoff:%Y-%m-%d %H:%M} UTC ({report.seconds:.1f} s)"
    )
    for name, count in report.counts().items():
        click.echo(f"  {name.replace('_', ' ')}: {count:,}")


COMMANDS = [retention_group]
