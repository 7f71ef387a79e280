"""`mailer worker` and `mailer scheduler`: the processes of a production deployment."""

from __future__ import annotations

import os
import sys
import time

import click

from mailer.cli._common import runtime
from mailer.errors import ConfigError


@click.command("worker")
@click.option("--processes", "-p", default=2, show_default=True, help="Worker processes.")
@click.option("--threads", "-t", default=2, show_default=True, help="Threads per process.")
def worker_command(processes: int, threads: int) -> None:
    """Run delivery workers on the Redis broker (`dramatiq workers.main` underneath)."""
    rt = runtime()
    if rt.settings.is_embedded_broker:
        raise ConfigError(
            "MAILER_BROKER_URL is memory://, where workers run inside the command that launches "
            "a campaign; set MAILER_BROKER_URL=redis://127.0.0.1:6379/0 to run separate workers"
        )
    args = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.main",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        "priority",
        "bulk",
    ]
    os.execv(sys.executable, args)


@click.command("scheduler")
@click.option(
    "--interval",
    "interval_s",
    type=float,
    default=None,
    help="Seconds between sweeps (default: MAILER_SCHEDULER_INTERVAL_S).",
)
@click.option("--once", is_flag=True, help="Run one sweep and exit.")
def scheduler_command(interval_s: float | None, once: bool) -> None:
    """Start scheduled campaigns, retry deferred sends, recover crashed workers' sends."""
    from mailer.delivery import scheduler_tick

    rt = runtime()
    interval_s = interval_s or rt.settings.scheduler_interval_s
    if rt.settings.is_embedded_broker:
        from workers.embedded import EmbeddedWorkers

        with EmbeddedWorkers(rt.settings, rt) as embedded:
            _loop(lambda: scheduler_tick(rt, dispatch=embedded.dispatch), interval_s, once)
        return
    from workers.actors import setup

    wiring = setup(rt.settings, rt)
    _loop(lambda: scheduler_tick(rt, dispatch=wiring.dispatch), interval_s, once)


def _loop(tick, interval_s: float, once: bool) -> None:  # type: ignore[no-untyped-def]
    while True:
        report = tick()
        changes = {k: v for k, v in vars(report).items() if v and k != "batches"}
        if changes:
            click.echo(f"sweep: {changes}")
        if once:
            return
        time.sleep(interval_s)


COMMANDS = [worker_command, scheduler_command]
