"""`mailer demo`: a whole campaign on the embedded default, into a local Maildir.

SQLite under var/demo/, the in-process broker and worker threads, and an SMTP capture server
on 127.0.0.1 that files every message in var/demo/maildir. Nothing listens elsewhere.
"""

from __future__ import annotations

import shutil
import time

import click
from rich.console import Console
from rich.table import Table

from mailer import campaigns, db
from mailer.access import actor_for_username
from mailer.access.users import add_user
from mailer.audit import cli_actor
from mailer.campaigns import CampaignSummary
from mailer.config import Settings
from mailer.contacts.sample import busiest_account_manager, load_sample_into_db, opt_out_some
from mailer.policy.text import ensure_first_version
from mailer.runtime import open_runtime
from mailer.transports import CaptureServer


@click.command("demo")
@click.option("--organizations", default=300, show_default=True, help="Sample organizations.")
@click.option("--seed", default=7, show_default=True, help="Sample data seed.")
def demo_command(organizations: int, seed: int) -> None:
    """Run a promotion and a service notice end to end on the embedded default."""
    from workers.embedded import EmbeddedWorkers

    console = Console()
    base = Settings.from_env()
    var = base.var_dir / "demo"
    if var.exists():
        shutil.rmtree(var)
    settings = base.with_(
        var_dir=var,
        database_url=f"sqlite:///{var / 'mailer.db'}",
        broker_url="memory://",
        smtp_url="capture://",
    )
    actor = cli_actor()
    console.print(f"[bold]mailer demo[/]: a fresh database in {var}/")

    rt = open_runtime(settings, check_schema=False)
    db.upgrade(rt.engine, settings=rt.settings)
    with rt.sessions.begin() as session:
        ensure_first_version(session)
        add_user(
            session,
            username="admin",
            display_name="Demo Admin",
            role="admin",
            email="admin@cpi.example",
            audited_as=actor,
        )
        add_user(
            session,
            username="marketing",
            display_name="CPI Marketing",
            role="marketing",
            email="marketing@cpi.example",
            audited_as=actor,
        )
    with rt.sessions() as session:
        admin = actor_for_username(session, "admin", via="cli")
    loaded = load_sample_into_db(rt, organizations, seed, admin)
    console.print(
        f"sample data: {loaded['organizations']} organizations, "
        f"{loaded['contacts']} contacts ({loaded['seconds']:.1f} s)"
    )
    manager = busiest_account_manager(rt)
    if manager is None:
        raise click.ClickException("the sample data has no account manager with clients")
    opt_out_some(rt, actor)

    capture = CaptureServer(settings)
    capture.start()
    started = time.perf_counter()
    try:
        with EmbeddedWorkers(settings, rt, threads=2) as workers:
            with rt.sessions() as session:
                marketer = actor_for_username(session, "marketing", via="cli")
                account_manager = actor_for_username(session, manager, via="cli")
            promo = campaigns.create_campaign(
                rt,
                actor=marketer,
                name="Open enrollment 2027",
                category="promotions",
                template="promotions/open-enrollment",
                rule_text="kind in (client, prospect) and employees >= 20",
            )
            notice = campaigns.create_campaign(
                rt,
                actor=account_manager,
                name="Planned maintenance this weekend",
                category="service",
                template="service/planned-maintenance",
            )
            for campaign, by in ((promo, marketer), (notice, account_manager)):
                campaigns.launch_campaign(rt, campaign.id, actor=by, dispatch=workers.dispatch)
            finished = workers.run_until_finished([promo.id, notice.id], timeout_s=600)
    finally:
        capture.stop()
    elapsed = time.perf_counter() - started
    summaries = [campaigns.campaign_status(rt, c.id) for c in (promo, notice)]
    _print_summary(console, summaries, elapsed)
    files = sorted((capture.maildir / "new").glob("*"))
    console.print(f"\nMaildir: {capture.maildir} ({len(files)} messages)")
    if files:
        console.print(f"one of them: {files[0]}")
    rt.close()
    if not finished:
        raise click.ClickException("the demo campaigns did not finish in time")


def _print_summary(console: Console, summaries: list[CampaignSummary], elapsed_s: float) -> None:
    table = Table(title="mailer demo: what was sent")
    for column in ("campaign", "category", "status", "sent", "skipped", "failed", "other"):
        table.add_column(column)
    sent_total = 0
    for s in summaries:
        sent = s.counts.get("sent", 0)
        sent_total += sent
        other = sum(n for k, n in s.counts.items() if k not in ("sent", "skipped", "failed"))
        table.add_row(
            f"{s.id} {s.name}",
            s.category,
            s.status,
            str(sent),
            str(s.counts.get("skipped", 0)),
            str(s.counts.get("failed", 0)),
            str(other),
        )
    console.print(table)
    reasons = Table(title="skipped, and why")
    reasons.add_column("campaign")
    reasons.add_column("reason")
    reasons.add_column("sends")
    for s in summaries:
        for reason, n in sorted(s.skip_reasons.items()):
            reasons.add_row(str(s.id), reason, str(n))
    console.print(reasons)
    rate = sent_total / elapsed_s if elapsed_s else 0.0
    console.print(
        f"{sent_total} messages delivered in {elapsed_s:.1f} s ({rate:.0f} msg/s), "
        "launch to last message"
    )


COMMANDS = [demo_command]
