"""`mailer campaign …`: create, launch, pause, resume, cancel, status, list, wait."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mailer import campaigns
from mailer.campaigns import CampaignSummary
from mailer.campaigns.times import format_delay, format_time, parse_time
from mailer.campaigns.waiting import wait_for_campaign
from mailer.cli._common import (
    acting_option,
    current_actor,
    echo_json,
    json_option,
    parse_params,
    runtime,
)
from mailer.cli._dispatch import Dispatcher, progress_bar, watch_progress
from mailer.delivery.heartbeats import sweep_overdue_warning
from mailer.enums import CampaignStatus, Category
from mailer.errors import CampaignError
from mailer.models import utcnow
from mailer.runtime import Runtime


@click.group("campaign")
def campaign_group() -> None:
    """Create and run campaigns."""


@campaign_group.command("create")
@click.option("--name", required=True)
@click.option("--category", required=True, type=click.Choice([c.value for c in Category]))
@click.option(
    "--template",
    required=True,
    help="e.g. promotions/open-enrollment: built-in, or stored (its latest version at launch)",
)
@click.option(
    "--subject", default="", help="The campaign's own subject (Jinja, like a template's)."
)
@click.option("--audience", default="", help="A saved audience from audiences/.")
@click.option("--rule", "rule_text", default="", help="An audience rule, inline.")
@click.option("--rule-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A campaign parameter the template declares (`params:` in its header) and reads as "
    "{{ params.KEY }}; repeatable. `mailer template list` shows what each template needs.",
)
@acting_option
@json_option
def create_command(
    name: str,
    category: str,
    template: str,
    subject: str,
    audience: str,
    rule_text: str,
    rule_file: Path | None,
    params: tuple[str, ...],
    as_username: str,
    as_json: bool,
) -> None:
    """Create a draft campaign."""
    if rule_file is not None:
        rule_text = rule_file.read_text()
    extra = parse_params(params)
    campaign = campaigns.create_campaign(
        runtime(),
        actor=current_actor(as_username),
        name=name,
        category=category,
        template=template,
        audience=audience,
        rule_text=rule_text,
        params=extra,
        subject=subject,
    )
    if as_json:
        echo_json({"id": campaign.id, "status": campaign.status})
    else:
        click.echo(
            f"campaign {campaign.id} created as a draft; launch it with "
            f"`mailer campaign launch {campaign.id}`"
        )


@campaign_group.command("launch")
@click.argument("campaign_id", type=int)
@click.option(
    "--at",
    "at",
    default=None,
    metavar="TIME",
    help="Schedule for this ISO time, with an offset (2026-12-01T09:00-08:00) or a zone "
    "('2026-12-01 09:00 America/Chicago'); without either, in MAILER_TIMEZONE.",
)
@click.option("--now", "is_now", is_flag=True, help="Send right away, even if --at is past.")
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Wait until delivered (always, with the in-process broker).",
)
@acting_option
@json_option
def launch_command(
    campaign_id: int,
    at: str | None,
    is_now: bool,
    wait: bool | None,
    as_username: str,
    as_json: bool,
) -> None:
    """Validate, plan the send log and start sending (or schedule with --at)."""
    rt = runtime()
    when = parse_time(at, rt.settings.timezone) if at else None
    if is_now:
        if when is not None and when > utcnow():
            raise CampaignError(
                f"--at {at} is still to come and --now says send now; give one of them"
            )
        when = None
    with Dispatcher(rt) as dispatcher:
        summary = campaigns.launch_campaign(
            rt, campaign_id, actor=current_actor(as_username), dispatch=dispatcher.dispatch, at=when
        )
        if summary.status == CampaignStatus.SENDING and (wait or dispatcher.is_embedded):
            dispatcher.wait([campaign_id], show=not as_json)
            summary = campaigns.campaign_status(rt, campaign_id)
    _show(summary, as_json, rt.settings.timezone)


@campaign_group.command("pause")
@click.argument("campaign_id", type=int)
@acting_option
@json_option
def pause_command(campaign_id: int, as_username: str, as_json: bool) -> None:
    """Stop sending within one batch; resume later."""
    rt = runtime()
    campaigns.pause_campaign(rt, campaign_id, actor=current_actor(as_username))
    _done(rt, campaign_id, "paused", as_json)


@campaign_group.command("resume")
@click.argument("campaign_id", type=int)
@acting_option
@json_option
def resume_command(campaign_id: int, as_username: str, as_json: bool) -> None:
    """Go on sending a paused campaign (it completes at once if nothing is left)."""
    rt = runtime()
    with Dispatcher(rt) as dispatcher:
        actor = current_actor(as_username)
        campaigns.resume_campaign(rt, campaign_id, actor=actor, dispatch=dispatcher.dispatch)
        if dispatcher.is_embedded:
            dispatcher.wait([campaign_id], show=not as_json)
    _done(rt, campaign_id, "resumed", as_json)


@campaign_group.command("cancel")
@click.argument("campaign_id", type=int)
@acting_option
@json_option
def cancel_command(campaign_id: int, as_username: str, as_json: bool) -> None:
    """Stop for good; what is still queued is skipped at once."""
    rt = runtime()
    campaigns.cancel_campaign(rt, campaign_id, actor=current_actor(as_username))
    _done(rt, campaign_id, "cancelled", as_json)


def _done(rt: Runtime, campaign_id: int, what: str, as_json: bool) -> None:
    summary = campaigns.campaign_status(rt, campaign_id)
    if as_json:
        echo_json(_as_dict(summary, rt.settings.timezone))
    elif summary.status == CampaignStatus.COMPLETED and what == "resumed":
        click.echo(f"campaign {campaign_id} resumed and completed: nothing was left to send")
    else:
        click.echo(f"campaign {campaign_id} {what}")


@campaign_group.command("wait")
@click.argument("campaign_id", type=int)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Give up after this long (exit 13) [default: wait as long as it takes].",
)
@json_option
def wait_command(campaign_id: int, timeout_s: float | None, as_json: bool) -> None:
    """Wait until the campaign completes (exit 0), or say why it will not.

    \b
    Exit codes: 0 completed, 10 cancelled, 11 failed, 12 missed its start,
    13 timed out (still scheduled, sending or paused), 14 a draft never launched,
    5 no such campaign. With --json the summary (or the error) is printed as JSON.
    """
    rt = runtime()
    show = sys.stdout.isatty() and not as_json
    with progress_bar(show) as progress:
        task = progress.add_task("sending", total=None)

        def update(summary: CampaignSummary) -> None:
            progress.update(task, total=summary.total, completed=summary.done)

        summary = wait_for_campaign(rt, campaign_id, timeout_s=timeout_s, on_progress=update)
    if as_json:
        echo_json(_as_dict(summary, rt.settings.timezone))
    else:
        click.echo(f"campaign {campaign_id} completed: {_counts_line(summary)}")


def _counts_line(summary: CampaignSummary) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or "no sends"


@campaign_group.command("status")
@click.argument("campaign_id", type=int)
@click.option("--watch", is_flag=True, help="Live progress until the campaign finishes.")
@json_option
@acting_option
def status_command(campaign_id: int, watch: bool, as_json: bool, as_username: str) -> None:
    """Counts by status, skip reasons and what the campaign is doing."""
    rt = runtime()
    who = current_actor(as_username)
    summary = campaigns.campaign_status(rt, campaign_id, actor=who)
    if watch:
        watch_progress(rt, [campaign_id])
        summary = campaigns.campaign_status(rt, campaign_id, actor=who)
    _show(summary, as_json, rt.settings.timezone)
    if summary.status in ("sending", "scheduled") and not rt.settings.is_embedded_broker:
        warning = sweep_overdue_warning(rt)
        if warning:
            click.echo(warning, err=True)


@campaign_group.command("list")
@click.option("--status", default=None, type=click.Choice([s.value for s in CampaignStatus]))
@json_option
@acting_option
def list_command(status: str | None, as_json: bool, as_username: str) -> None:
    """Every campaign, newest last (an account manager's own only)."""
    rt = runtime()
    summaries = campaigns.list_campaigns(rt, status=status, actor=current_actor(as_username))
    if as_json:
        echo_json([_as_dict(s, rt.settings.timezone) for s in summaries])
        return
    table = Table("id", "name", "category", "status", "sent", "skipped", "failed", "total")
    for s in summaries:
        table.add_row(
            str(s.id),
            s.name,
            s.category,
            s.status,
            str(s.counts.get("sent", 0)),
            str(s.counts.get("skipped", 0)),
            str(s.counts.get("failed", 0)),
            str(s.total),
        )
    Console().print(table)


def _show(summary: CampaignSummary, as_json: bool, zone_name: str) -> None:
    if as_json:
        echo_json(_as_dict(summary, zone_name))
        return
    console = Console()
    console.print(
        f"campaign {summary.id} [bold]{summary.name}[/] ({summary.category}): "
        f"{summary.status}" + (f" — {summary.status_detail}" if summary.status_detail else "")
    )
    if summary.status == CampaignStatus.SCHEDULED and summary.scheduled_at is not None:
        delay = format_delay(summary.scheduled_at - utcnow())
        console.print(f"sends {format_time(summary.scheduled_at, zone_name)}, {delay}")
    table = Table("status", "sends")
    for status, n in sorted(summary.counts.items()):
        table.add_row(status, str(n))
    console.print(table)
    if summary.skip_reasons:
        reasons = Table("skipped because", "sends")
        for reason, n in sorted(summary.skip_reasons.items()):
            reasons.add_row(reason, str(n))
        console.print(reasons)


def _as_dict(summary: CampaignSummary, zone_name: str) -> dict[str, object]:
    data = dataclasses.asdict(summary)
    data["total"] = summary.total
    data["scheduled_at_local"] = (
        format_time(summary.scheduled_at, zone_name) if summary.scheduled_at else None
    )
    return data


COMMANDS = [campaign_group]
