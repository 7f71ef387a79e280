"""`mailer contact …` and `mailer audit`: find contacts, read one's record, change consent and
suppression on their behalf (admins, with a reason), and read the audit log (admins)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import click

from mailer.audit import AuditQuery, query_events
from mailer.cli._common import acting, acting_option, echo_json, runtime
from mailer.contacts.compliance import (
    REASON_MAX_CHARS,
    REASON_MIN_CHARS,
    admin_opt_in,
    admin_opt_out,
    suppress_address,
    unsuppress_address,
)
from mailer.contacts.lookup import contact_id_for, contact_record, search_contacts
from mailer.enums import OPT_OUT_SCOPES

reason_option = click.option(
    "--reason",
    required=True,
    help=f"Why, in {REASON_MIN_CHARS}-{REASON_MAX_CHARS} characters (kept in the audit log), "
    "e.g. 'asked by phone'.",
)


@click.group("contact")
def contact_group() -> None:
    """Find contacts and manage their consent and suppression."""


@contact_group.command("search")
@click.argument("text", default="")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--after", "after_id", type=int, default=None, help="Next page: the last id shown.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@acting_option
def search_command(
    text: str, limit: int, after_id: int | None, as_json: bool, as_username: str
) -> None:
    """Contacts whose email, name or organization contains TEXT (your own clients only, for an
    account manager)."""
    rt = runtime()
    with rt.sessions() as session:
        page = search_contacts(
            session, acting(session, as_username), text, limit=limit, after_id=after_id
        )
    if as_json:
        echo_json(
            {"items": [dataclasses.asdict(c) for c in page.items], "next": page.next_after_id}
        )
        return
    for c in page.items:
        name = f"{c.first_name} {c.last_name}".strip()
        click.echo(f"{c.id:>8}  {c.email:<40} {name:<24} {c.organization_name}")
    if page.next_after_id is not None:
        click.echo(f"more: --after {page.next_after_id}")


@contact_group.command("show")
@click.argument("contact")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@acting_option
def show_command(contact: str, as_json: bool, as_username: str) -> None:
    """CONTACT's (an id or email) consent, suppression, opt-outs and sends."""
    rt = runtime()
    with rt.sessions() as session:
        record = contact_record(
            session, acting(session, as_username), contact_id_for(session, contact)
        )
    if as_json:
        echo_json(dataclasses.asdict(record))
        return
    c = record.contact
    click.echo(f"{c.first_name} {c.last_name} <{c.email}>, {c.title}".replace(" ,", ","))
    click.echo(
        f"organization {c.organization_name} ({c.organization_external_id}, "
        f"{c.organization_kind}), account manager {c.account_manager or '-'}"
    )
    click.echo(
        "receives: "
        + ", ".join(f"{scope} {'yes' if on else 'no'}" for scope, on in record.consent.items())
    )
    if record.suppression:
        s = record.suppression
        click.echo(f"suppressed since {s.created_at:%Y-%m-%d} ({s.reason}): {s.detail}")
    for send in record.sends:
        when = f"{send.sent_at:%Y-%m-%d %H:%M}" if send.sent_at else "-"
        click.echo(
            f"  {when}  {send.campaign_name:<30} {send.status:<8} {send.skip_reason} "
            f"{send.smtp_reply}".rstrip()
        )


scope_option = click.option(
    "--scope", required=True, type=click.Choice([str(s) for s in OPT_OUT_SCOPES])
)


@contact_group.command("opt-out")
@click.argument("contact")
@scope_option
@reason_option
@acting_option
def opt_out_command(contact: str, scope: str, reason: str, as_username: str) -> None:
    """Opt CONTACT out of SCOPE on their behalf (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        changed = admin_opt_out(
            session, acting(session, as_username), contact_id_for(session, contact), scope, reason
        )
    click.echo(f"opted out of {scope}" if changed else f"already opted out of {scope}")


@contact_group.command("opt-in")
@click.argument("contact")
@scope_option
@reason_option
@acting_option
def opt_in_command(contact: str, scope: str, reason: str, as_username: str) -> None:
    """Undo CONTACT's opt-out of SCOPE (admins only; e.g. a written request to resume)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        changed = admin_opt_in(
            session, acting(session, as_username), contact_id_for(session, contact), scope, reason
        )
    click.echo(f"receives {scope} again" if changed else f"was not opted out of {scope}")


@contact_group.command("suppress")
@click.argument("email")
@reason_option
@acting_option
def suppress_command(email: str, reason: str, as_username: str) -> None:
    """Stop all mail to EMAIL (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        changed = suppress_address(
            session,
            acting(session, as_username),
            email,
            reason,
            address_hash=rt.hash_address(email.strip()),
        )
    click.echo(f"suppressed {email}" if changed else f"{email} was already suppressed")


@contact_group.command("unsuppress")
@click.argument("email")
@reason_option
@acting_option
def unsuppress_command(email: str, reason: str, as_username: str) -> None:
    """Let mail go to EMAIL again (admins only)."""
    rt = runtime()
    with rt.sessions.begin() as session:
        unsuppress_address(
            session,
            acting(session, as_username),
            email,
            reason,
            address_hash=rt.hash_address(email.strip()),
        )
    click.echo(f"lifted the suppression of {email}")


def _day(value: str | None, option: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)", param_hint=option
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@click.command("audit")
@click.option("--actor", "who", default=None, help="Only this actor's events.")
@click.option("--action", default=None, help="An action ('login.failed') or family ('campaign.*').")
@click.option("--object", "obj", default=None, metavar="TYPE[:ID]", help="e.g. campaign:12")
@click.option("--since", default=None, help="From this UTC time (YYYY-MM-DD[THH:MM]).")
@click.option("--until", default=None, help="Before this UTC time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 500))
@click.option("--cursor", default=None, help="Next page: the cursor printed by the last page.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@acting_option
def audit_command(
    who: str | None,
    action: str | None,
    obj: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
    as_username: str,
) -> None:
    """Read the audit log, newest first (admins only)."""
    object_type, _, object_id = (obj or "").partition(":")
    filters = AuditQuery(
        actor=who,
        action=action,
        object_type=object_type or None,
        object_id=object_id or None,
        since=_day(since, "--since"),
        until=_day(until, "--until"),
    )
    rt = runtime()
    with rt.sessions() as session:
        page = query_events(
            session, acting(session, as_username), filters, limit=limit, cursor=cursor
        )
        rows: list[dict[str, Any]] = [
            {
                "id": e.id,
                "at": e.at.isoformat(),
                "actor": e.actor,
                "action": e.action,
                "object_type": e.object_type,
                "object_id": e.object_id,
                "ip": e.ip,
                "details": e.details,
            }
            for e in page.items
        ]
    if as_json:
        echo_json({"items": rows, "next_cursor": page.next_cursor})
        return
    for row in rows:
        target = f"{row['object_type']}:{row['object_id']}" if row["object_type"] else ""
        click.echo(f"{row['at'][:19]}  {row['actor']:<16} {row['action']:<24} {target}")
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


COMMANDS = [contact_group, audit_command]
