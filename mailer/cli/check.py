"""`mailer check-config`: settings, database, broker, relays and DKIM checked, fixes named."""

from __future__ import annotations

import sys

import click

from mailer.checks import Check, Report, check_all
from mailer.cli._common import echo_json, json_option
from mailer.config import Settings
from mailer.errors import ConfigError


@click.command("check-config")
@json_option
def check_config_command(as_json: bool) -> None:
    """Check every setting and connection (no mail is sent); exit 1 when anything is wrong.

    Connects to the database, the broker and each relay (EHLO, STARTTLS, AUTH, QUIT), checks
    the DKIM key and prints the DNS TXT record to publish for it.
    """
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        report = Report([Check("settings", False, str(exc), "fix the setting named above")])
    else:
        report = check_all(settings)
        report.checks.insert(0, Check("settings", True, f"valid ({settings.env})"))
    if as_json:
        echo_json({"ok": report.ok, "checks": [c.as_dict() for c in report.checks]})
    else:
        for check in report.checks:
            mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {check.name}: {check.detail}")
            if check.fix and not check.ok:
                click.echo(f"     fix: {check.fix}")
            if check.publish:
                click.echo(f"     DNS: {check.publish}")
        failed = sum(not c.ok for c in report.checks)
        click.echo("all good" if report.ok else f"{failed} problem(s)")
    sys.exit(0 if report.ok else 1)


COMMANDS = [check_config_command]
