"""`mailer suppressions list|lift`: addresses mail no longer goes to, and lifting a soft-bounce
stop."""

from __future__ import annotations

import click

from mailer.cli._common import acting, acting_option, echo_json, json_option, runtime
from mailer.deliverability import all_suppressions, lift_marketing_suppression


@click.group("suppressions")
def suppressions_group() -> None:
    """Suppressed addresses: hard bounces (all mail) and soft-bounce stops (marketing)."""


@suppressions_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """Every suppression with its reason, newest first."""
    rt = runtime()
    with rt.sessions() as session:
        rows = all_suppressions(session)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no suppressed addresses")
    for row in rows:
        click.echo(
            f"{row['address']}  {row['reason']} ({row['scope']}) since {row['since'][:10]}: "
            f"{row['detail']}"
        )


@suppressions_group.command("lift")
@click.argument("address")
@click.option("--note", default="", help="Why, for the audit log.")
@acting_option
def lift_command(address: str, note: str, as_username: str) -> None:
    """Let marketing mail go to ADDRESS again after a soft-bounce stop (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        actor = acting(session, as_username)
        lifted = lift_marketing_suppression(
            session, actor, address_hash=rt.hash_address(address), note=note
        )
    click.echo(f"lifted {lifted} soft-bounce stop(s) of {address}; its count starts again")


COMMANDS = [suppressions_group]
