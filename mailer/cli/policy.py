"""`mailer policy …`: publish a version (and notify every client), list, show, coverage, resend."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from mailer import policy
from mailer.cli._common import acting_option, current_actor, echo_json, json_option, runtime
from mailer.cli._dispatch import Dispatcher
from mailer.csvfiles import dict_writer

file_option = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("policy")
def policy_group() -> None:
    """Privacy-policy versions and the notice every client gets when one changes."""


@policy_group.command("publish")
@click.option("--version", "label", required=True, help="The new version's label, e.g. 2.")
@click.option("--effective", required=True, help="The day it takes effect (YYYY-MM-DD).")
@click.option("--text", "text_file", required=True, type=file_option, help="The full policy text.")
@click.option(
    "--summary",
    "summary_file",
    required=True,
    type=file_option,
    help="What changed: a paragraph, then one '- ' line per change.",
)
@click.option("--material", is_flag=True, help="Changes use or disclosure: notify every client.")
@acting_option
@json_option
def publish_command(
    label: str,
    effective: str,
    text_file: Path,
    summary_file: Path,
    material: bool,
    as_username: str,
    as_json: bool,
) -> None:
    """Store a policy version; with --material, send the notice to every client now."""
    rt = runtime()
    effective_on = _parse_day(effective)
    text = _read(text_file, "--text")
    summary = _read(summary_file, "--summary")
    with Dispatcher(rt) as dispatcher:
        report = policy.publish_policy(
            rt,
            version=label,
            effective_on=effective_on,
            text=text,
            summary=summary,
            is_material=material,
            actor=current_actor(as_username),
            dispatch=dispatcher.dispatch,
        )
        if report.campaign_id is not None and dispatcher.is_embedded:
            dispatcher.wait([report.campaign_id], show=not as_json)
    if as_json:
        echo_json(
            {
                "version": report.version,
                "effective_on": report.effective_on.isoformat(),
                "is_material": report.is_material,
                "published_by": report.published_by,
                "published_at": report.published_at.isoformat(),
                "campaign_id": report.campaign_id,
                "counts_at_launch": report.counts,
            }
        )
        return
    click.echo(f"version {report.version} published, effective {report.effective_on}")
    if report.campaign_id is None:
        click.echo("not material: no notice sent")
        return
    planned = sum(report.counts.values())
    skipped = report.counts.get("skipped", 0)
    click.echo(
        f"notice campaign {report.campaign_id} launched on the priority queue "
        f"({planned - skipped} contacts to notify, {skipped} skipped, of {planned} considered); "
        f"proof of coverage: `mailer policy coverage {report.version}`"
    )


@policy_group.command("list")
@json_option
def list_command(as_json: bool) -> None:
    """Every version, newest first."""
    with runtime().sessions() as session:
        versions = [
            {
                "version": v.version,
                "effective_on": v.effective_on.isoformat(),
                "is_material": v.is_material,
                "published_at": v.published_at.isoformat(),
                "published_by": v.published_by,
                "campaign_id": v.campaign_id,
            }
            for v in policy.all_versions(session)
        ]
    if as_json:
        echo_json(versions)
        return
    from rich.console import Console  # rich loads only for commands that print tables
    from rich.table import Table

    table = Table("version", "effective", "material", "published", "by", "notice campaign")
    for v in versions:
        table.add_row(
            str(v["version"]),
            str(v["effective_on"]),
            "yes" if v["is_material"] else "no",
            str(v["published_at"])[:16],
            str(v["published_by"]),
            str(v["campaign_id"] or "-"),
        )
    Console().print(table)


@policy_group.command("show")
@click.argument("version")
@click.option("--full", is_flag=True, help="Print the whole policy text too.")
@json_option
def show_command(version: str, full: bool, as_json: bool) -> None:
    """One version: dates, who published it, its summary (and text with --full)."""
    with runtime().sessions() as session:
        v = policy.require_version(session, version)
        data = {
            "version": v.version,
            "effective_on": v.effective_on.isoformat(),
            "is_material": v.is_material,
            "published_at": v.published_at.isoformat(),
            "published_by": v.published_by,
            "campaign_id": v.campaign_id,
            "summary": v.summary,
            "text": v.text,
        }
    if as_json:
        echo_json(data)
        return
    for key in ("version", "effective_on", "is_material", "published_at", "published_by"):
        click.echo(f"{key}: {data[key]}")
    click.echo(f"notice campaign: {data['campaign_id'] or 'none'}")
    click.echo(f"summary:\n{data['summary']}")
    if full:
        click.echo(f"\n{data['text']}")


@policy_group.command("coverage")
@click.argument("version")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@acting_option
def coverage_command(version: str, csv_path: Path | None, as_json: bool, as_username: str) -> None:
    """Per client: contacts sent, failed, undeliverable, pending; and the clients not reached.

    Admins only.
    """
    rt = runtime()
    report = policy.coverage(rt, version, actor=current_actor(as_username))
    if csv_path is not None:
        _write_csv(report, csv_path)
    if as_json:
        echo_json(report.as_dict())
        return
    _print_coverage(report)
    if csv_path is not None:
        click.echo(f"every client written to {csv_path}")


@policy_group.command("resend")
@click.argument("version")
@acting_option
@json_option
def resend_command(version: str, as_username: str, as_json: bool) -> None:
    """Send the notice to eligible contacts not yet sent it (never twice to anyone)."""
    rt = runtime()
    with Dispatcher(rt) as dispatcher:
        report = policy.resend_notice(
            rt,
            version,
            actor=current_actor(as_username),
            dispatch=dispatcher.dispatch,
        )
        if report.queued and dispatcher.is_embedded:
            dispatcher.wait([report.campaign_id], show=not as_json)
    if as_json:
        echo_json(
            {
                "version": report.version,
                "campaign_id": report.campaign_id,
                "added": report.added,
                "requeued": report.requeued,
                "reopened": report.is_reopened,
            }
        )
        return
    if not report.queued:
        click.echo(f"nothing to resend: every eligible contact of version {version} was sent it")
        return
    click.echo(
        f"notice of version {version} queued for {report.queued} contacts "
        f"({report.added} new, {report.requeued} tried again) in campaign {report.campaign_id}"
    )


def _print_coverage(report: policy.CoverageReport) -> None:
    from rich.console import Console  # rich loads only for commands that print tables
    from rich.table import Table

    console = Console()
    if report.campaign_id is None:
        console.print(f"version {report.version} is not material: no notice was sent")
        return
    state = ""
    if report.is_planning:
        state = " — still planning (not yet planned contacts count as pending), numbers will change"
    elif not report.is_finished:
        state = " — still sending, numbers will change"
    console.print(
        f"version {report.version}, notice campaign {report.campaign_id} "
        f"({report.campaign_status}){state}"
    )
    console.print(
        f"eligible clients: {len(report.clients)}, reached: {len(report.reached)}, "
        f"not reached: {len(report.not_reached)}"
    )
    for label, counts_of in report.by_client_status().items():
        console.print(
            f"  {label} clients: {counts_of['eligible']}, reached: {counts_of['reached']}, "
            f"not reached: {counts_of['not_reached']}"
        )
    counts = report.contacts
    console.print("contacts: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
    if not report.not_reached:
        return
    table = Table(
        "client", "name", "active/former", "account manager", "reason", title="clients not reached"
    )
    for client in sorted(report.not_reached, key=lambda c: (not c.is_active, c.external_id)):
        status = "active" if client.is_active else "former"
        table.add_row(
            client.external_id, client.name, status, client.account_manager, client.reason
        )
    console.print(table)


def _write_csv(report: policy.CoverageReport, path: Path) -> None:
    columns = [
        "external_id",
        "name",
        "client",
        "account_manager",
        "is_reached",
        "sent",
        "pending",
        "undeliverable",
        "failed",
        "skipped",
        "reason",
    ]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = dict_writer(out, columns, extrasaction="ignore")
        writer.writeheader()
        for client in report.clients:
            writer.writerow(client.as_dict())


def _read(path: Path, option: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8", param_hint=option
        ) from exc


def _parse_day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is not a date like 2027-01-01", param_hint="--effective"
        ) from exc


COMMANDS = [policy_group]
