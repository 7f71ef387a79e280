"""`mailer worker`, `mailer scheduler` and `mailer status`: the processes of a production
deployment, and how they are doing."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mailer.cli._common import echo_json, json_option, runtime
from mailer.config import _mask_url
from mailer.errors import ConfigError
from mailer.models import utcnow


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.command("worker")
@click.option("--processes", "-p", default=2, show_default=True, help="Worker processes.")
@click.option("--threads", "-t", default=2, show_default=True, help="Threads per process.")
def worker_command(processes: int, threads: int) -> None:
    """Run delivery worker processes on the Redis broker, replacing any that die."""
    from workers.supervisor import Supervisor

    rt = runtime()
    settings = rt.settings
    if settings.is_embedded_broker:
        raise ConfigError(
            "MAILER_BROKER_URL is memory://, where workers run inside the command that launches "
            "a campaign; set MAILER_BROKER_URL=redis://127.0.0.1:6379/0 to run separate workers"
        )
    rt.close()  # the worker processes open their own connections
    _logging()
    supervisor = Supervisor(processes, threads, echo=lambda line: click.echo(line))
    ready = (
        f"mailer worker ready: {processes} processes × {threads} threads on "
        f"{_mask_url(settings.broker_url)} (queues priority, bulk)"
    )
    sys.exit(supervisor.run(ready))


@click.command("scheduler")
@click.option(
    "--interval",
    "interval_s",
    type=float,
    default=None,
    help="Seconds between sweeps (default: MAILER_SCHEDULER_INTERVAL_S).",
)
@click.option("--once", is_flag=True, help="Run one sweep and exit.")
@json_option
def scheduler_command(interval_s: float | None, once: bool, as_json: bool) -> None:
    """Start scheduled campaigns, retry deferred sends, recover stopped workers' sends,
    complete campaigns whose last send was recorded elsewhere. Keeps going through database
    and broker outages."""
    from mailer.delivery.scheduler import report_dict, run_scheduler, sweep_once

    rt = runtime()
    interval_s = interval_s or rt.settings.scheduler_interval_s
    if rt.settings.is_embedded_broker:
        from workers.embedded import EmbeddedWorkers

        with EmbeddedWorkers(rt.settings, rt) as embedded:
            if once:
                _print_report(report_dict(sweep_once(rt, embedded.dispatch)), as_json)
                return
            _logging()
            run_scheduler(
                rt,
                embedded.dispatch,
                interval_s=interval_s,
                on_report=lambda r: _print_report(report_dict(r), as_json, quiet=True),
                on_ready=lambda: click.echo(_ready_line(interval_s, "embedded workers")),
            )
        return
    from workers.actors import setup

    wiring = setup(rt.settings, rt)
    if once:
        _print_report(report_dict(sweep_once(rt, wiring.dispatch)), as_json)
        return
    _logging()
    run_scheduler(
        rt,
        wiring.dispatch,
        interval_s=interval_s,
        on_report=lambda r: _print_report(report_dict(r), as_json, quiet=True),
        on_ready=lambda: click.echo(_ready_line(interval_s, _mask_url(rt.settings.broker_url))),
    )


def _ready_line(interval_s: float, broker: str) -> str:
    return f"mailer scheduler ready: sweeping every {interval_s:g} s, dispatching to {broker}"


def _print_report(found: dict[str, Any], as_json: bool, *, quiet: bool = False) -> None:
    changes = {k: v for k, v in found.items() if v and k != "batches"}
    if as_json:
        if changes or not quiet:
            click.echo(_json_line(found))
        return
    if changes:
        click.echo(f"sweep: {changes}")
    elif not quiet:
        click.echo("sweep: nothing to do")


def _json_line(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, default=str, sort_keys=True)


@click.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Queues and their depths, worker processes, the last sweep, campaigns sending."""
    from mailer.delivery.heartbeats import STALE_AFTER_S, SWEEP_OVERDUE_S, system_status

    rt = runtime()
    now = utcnow()
    status = system_status(rt, now)
    queues = _queue_depths(rt.settings)
    sweep_age = (now - status.last_sweep_at).total_seconds() if status.last_sweep_at else None
    data: dict[str, Any] = {
        "broker": _mask_url(rt.settings.broker_url),
        "queues": queues,
        "processes": [p.as_dict() for p in status.processes],
        "workers_alive": status.workers_alive,
        "schedulers_alive": status.schedulers_alive,
        "last_sweep_at": status.last_sweep_at.isoformat() if status.last_sweep_at else None,
        "last_sweep_age_s": round(sweep_age, 1) if sweep_age is not None else None,
        "sweep_overdue": sweep_age is None or sweep_age > SWEEP_OVERDUE_S,
        "campaigns_sending": [c.as_dict() for c in status.campaigns],
    }
    if as_json:
        echo_json(data)
        return
    console = Console()
    console.print(f"broker {data['broker']}")
    if isinstance(queues, dict) and "error" not in queues:
        table = Table("queue", "waiting", "in progress", "delayed")
        for name, depth in queues.items():
            table.add_row(
                name, str(depth["waiting"]), str(depth["in_progress"]), str(depth["delayed"])
            )
        console.print(table)
    else:
        console.print(f"queues: {queues.get('error', 'in this process (memory://)')}")
    table = Table("process", "host", "pid", "up since", "last seen", "state")
    if not status.processes:
        console.print("no worker process or scheduler has reported in the last day")
    for p in status.processes:
        age = (now - p.seen_at).total_seconds()
        table.add_row(
            p.kind,
            p.host,
            str(p.pid),
            f"{p.started_at:%Y-%m-%d %H:%M:%S}",
            f"{age:.0f} s ago",
            "alive" if p.is_alive else f"gone (silent > {STALE_AFTER_S:.0f} s)",
        )
    if status.processes:
        console.print(table)
    if sweep_age is None:
        console.print("[yellow]no scheduler has ever swept: run `mailer scheduler`[/]")
    elif sweep_age > SWEEP_OVERDUE_S:
        console.print(f"[yellow]last sweep {sweep_age:.0f} s ago: is `mailer scheduler` up?[/]")
    else:
        console.print(f"last sweep {sweep_age:.0f} s ago")
    if status.campaigns:
        table = Table("campaign", "name", "category", "open", "total")
        for c in status.campaigns:
            table.add_row(str(c.id), c.name, c.category, str(c.open), str(c.total))
        console.print(table)
    else:
        console.print("no campaign is sending")


def _queue_depths(settings: Any) -> dict[str, Any]:
    if settings.is_embedded_broker:
        return {"error": "memory:// broker: queues live inside the launching command"}
    from workers.broker import queue_depths

    try:
        return queue_depths(settings)
    except Exception as exc:
        return {"error": f"cannot read the queues from the broker: {exc}"}


COMMANDS = [worker_command, scheduler_command, status_command]
