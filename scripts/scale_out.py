"""Scale-out, shown: two worker "hosts" in network namespaces send one campaign.

Made by this script and removed after (root needed): a bridge `mlr-br<tag>` with
10.231.<n>.1/24 in the root namespace and two namespaces `mlr-h1-<tag>`, `mlr-h2-<tag>` at
.2 and .3, each linked to the bridge by a veth pair (tag and n from the process id). In the
root namespace, on the bridge address only: TCP forwarders to the machine's PostgreSQL and
Redis (which listen on loopback), and an SMTP server that counts each message by the host it
came from. Each host runs `mailer worker` over that network, with
the same relay URL, so the relay's rate limit (MAILER_RATE_LIMIT_PER_S) is shared through
Redis. A scheduler runs in the root namespace. Mid-run the second host is killed (SIGKILL to
its process group); the first host and the scheduler finish the campaign.

Prints per-host messages and throughput, the total, the fastest second (against the shared
limit), duplicates and missing recipients, and the time from the kill to completion; the last
line is JSON. Exits 1 if any recipient got no message or more than one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, func, select, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.config import Settings  # noqa: E402
from mailer.models import Campaign, Contact, Heartbeat, Send  # noqa: E402
from mailer.runtime import open_runtime  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Names and a subnet of this run's own, so two runs on one machine never meet.
_TAG = os.getpid() % 10000
_NET = f"10.231.{os.getpid() % 250 + 1}"
BRIDGE, BRIDGE_IP = f"mlr-br{_TAG}", f"{_NET}.1"
HOSTS = {f"mlr-h1-{_TAG}": f"{_NET}.2", f"mlr-h2-{_TAG}": f"{_NET}.3"}
#: The host killed mid-run.
VICTIM = f"mlr-h2-{_TAG}"
SMTP_PORT = 2525


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def make_network() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for n, (ns, ip) in enumerate(HOSTS.items(), start=1):
        sh("ip", "netns", "add", ns)
        sh(
            "ip",
            "link",
            "add",
            f"mlr-v{n}-{_TAG}",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        )
        sh("ip", "link", "set", f"mlr-v{n}-{_TAG}", "master", BRIDGE, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def remove_network() -> None:
    for n, ns in enumerate(HOSTS, start=1):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", f"mlr-v{n}-{_TAG}"], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)


class Forwarders:
    """TCP forwarders bridge-address:port → 127.0.0.1:port, in a thread of their own."""

    def __init__(self, ports: list[int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.ports = ports
        self.servers: list[asyncio.base_events.Server] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    def _handler(self, port: int) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

        return handle

    def start(self) -> None:
        self.thread.start()
        for port in self.ports:
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._handler(port), BRIDGE_IP, port), self.loop
            ).result(10)
            self.servers.append(server)

    def stop(self) -> None:
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


class CountingRelay:
    """Accepts every message and counts it by recipient, by sending host and by second."""

    def __init__(self) -> None:
        self.by_rcpt: collections.Counter[str] = collections.Counter()
        self.by_host: collections.Counter[str] = collections.Counter()
        self.by_second: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.by_rcpt[rcpt.lower()] += 1
            self.by_host[session.peer[0]] += len(envelope.rcpt_tos)
            self.by_second[int(time.time())] += len(envelope.rcpt_tos)
        return "250 2.0.0 OK"


def _wait_for_workers(rt: Any, count: int, timeout_s: float = 120.0) -> None:
    """Until `count` worker processes have reported a heartbeat (they booted and connected)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with rt.sessions() as session:
            alive = session.scalar(
                select(func.count()).select_from(Heartbeat).where(Heartbeat.kind == "worker")
            )
        if (alive or 0) >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {alive} of {count} worker hosts started in {timeout_s:.0f} s")
        time.sleep(0.5)


def _watch(
    rt: Any,
    relay: CountingRelay,
    processes: dict[str, subprocess.Popen[bytes]],
    args: argparse.Namespace,
    recipients: int,
    started: float,
) -> tuple[float, float | None, int]:
    """Kill host 2 once enough is sent; wait for the campaign to finish."""
    killed_at = None
    host2_before_kill = 0
    deadline = started + 900
    while True:
        with rt.sessions() as session:
            status = session.scalar(select(Campaign.status).where(Campaign.id == 1))
        total = sum(relay.by_host.values())
        if killed_at is None and total >= args.kill_at * recipients:
            os.killpg(processes[VICTIM].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            host2_before_kill = relay.by_host[HOSTS[VICTIM]]
            print(f"killed host 2 after {killed_at - started:.1f} s with {total:,} sent")
        if status not in ("sending", "scheduled"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"campaign still {status} after 900 s")
        time.sleep(0.2)
    done = time.monotonic()
    return done, killed_at, host2_before_kill


def _summary(
    relay: CountingRelay,
    emails: list[str],
    counts: dict[str, int],
    args: argparse.Namespace,
    started: float,
    done: float,
    killed_at: float | None,
    host2_before_kill: int,
    recipients: int,
) -> dict[str, Any]:
    duplicates = sum(1 for n in relay.by_rcpt.values() if n > 1)
    missing = sum(1 for e in emails if relay.by_rcpt[e] == 0)
    elapsed = done - started
    seconds = sorted(relay.by_second.items())[1:-1]  # whole seconds only
    result = {
        "recipients": recipients,
        "delivered": sum(relay.by_rcpt.values()),
        "send_log": counts,
        "seconds": round(elapsed, 1),
        "msg_per_s": round(sum(relay.by_rcpt.values()) / elapsed),
        "per_host": {
            ns: {
                "messages": relay.by_host[ip],
                "msg_per_s_while_up": round(
                    (host2_before_kill if ns == VICTIM else relay.by_host[ip])
                    / ((killed_at or done) - started if ns == VICTIM else elapsed)
                ),
            }
            for ns, ip in HOSTS.items()
        },
        "fastest_second": max((n for _, n in seconds), default=0),
        "rate_limit_per_s": args.rate,
        "killed_after_s": round((killed_at or done) - started, 1),
        "kill_to_completion_s": round(done - (killed_at or done), 1),
        "duplicates": duplicates,
        "missing": missing,
    }
    for ns, info in result["per_host"].items():
        print(f"{ns}: {info['messages']:,} messages, {info['msg_per_s_while_up']:,} msg/s while up")
    print(
        f"total {result['delivered']:,} of {recipients:,} in {elapsed:.1f} s "
        f"({result['msg_per_s']:,} msg/s); fastest second {result['fastest_second']:,} "
        f"(limit {args.rate:,}); kill → completion {result['kill_to_completion_s']} s; "
        f"duplicates {duplicates}, missing {missing}; send log {counts}"
    )
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/scale-out")
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1500, help="shared messages/s limit")
    parser.add_argument("--kill-at", type=float, default=0.4, help="share sent when host 2 dies")
    parser.add_argument("--batch-size", type=int, default=100, help="sends per broker message")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("scripts/scale-out makes network namespaces: run it as root")

    db_name = f"mailer_scale_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    var = ROOT / "var" / "scale-out" / db_name
    base_env = dict(os.environ)
    base_env.update(
        MAILER_BROKER_NAMESPACE=db_name,
        MAILER_SMTP_URL=f"smtp://{BRIDGE_IP}:{SMTP_PORT}",
        MAILER_RATE_LIMIT_PER_S=str(args.rate),
        MAILER_USER="ops",
        MAILER_VAR_DIR=str(var),
        MAILER_LEASE_S="15",
        MAILER_SCHEDULER_INTERVAL_S="1",
        MAILER_RETENTION_AT="",
        MAILER_BATCH_SIZE=str(args.batch_size),
    )
    local = dict(
        base_env,
        MAILER_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        MAILER_BROKER_URL="redis://127.0.0.1:6379/0",
    )
    remote = dict(
        base_env,
        MAILER_DATABASE_URL=f"postgresql+psycopg://postgres@{BRIDGE_IP}:5432/{db_name}",
        MAILER_BROKER_URL=f"redis://{BRIDGE_IP}:6379/0",
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    forwarders = Forwarders([5432, 6379])
    relay = CountingRelay()
    controller = None
    try:
        remove_network()
        make_network()
        forwarders.start()
        controller = Controller(relay, hostname=BRIDGE_IP, port=SMTP_PORT)
        controller.start()

        def run(*cmd: str) -> None:
            subprocess.run(cmd, check=True, env=local, cwd=ROOT, stdout=subprocess.DEVNULL)

        run("mailer", "db", "upgrade")
        run(
            "mailer",
            "users",
            "create",
            "ops",
            "--role",
            "admin",
            "--name",
            "Ops",
            "--email",
            "ops@cpi.example",
        )
        run(
            "mailer",
            "sample-data",
            "--organizations",
            str(args.recipients),
            "--seed",
            "5",
            "--into-db",
            "--contacts-per-org",
            "1-1",
        )
        os.environ.update(local)
        rt = open_runtime(Settings.from_env())
        with rt.sessions.begin() as session:
            session.execute(update(Contact).values(status="active"))
            recipients = session.scalar(select(func.count()).select_from(Contact)) or 0
        run(
            "mailer",
            "campaign",
            "create",
            "--name",
            "scale-out",
            "--category",
            "promotions",
            "--template",
            "promotions/open-enrollment",
        )
        for ns in HOSTS:
            processes[ns] = subprocess.Popen(
                ["ip", "netns", "exec", ns, "mailer", "worker", "-p", "1", "-t", "2"],
                env=remote,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        processes["scheduler"] = subprocess.Popen(
            ["mailer", "scheduler"],
            env=local,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_workers(rt, len(HOSTS))  # both hosts booted and connected over the network
        started = time.monotonic()
        run("mailer", "campaign", "launch", "1", "--no-wait")
        done, killed_at, host2_before_kill = _watch(rt, relay, processes, args, recipients, started)
        with rt.sessions() as session:
            counts = dict(
                session.execute(select(Send.status, func.count()).group_by(Send.status)).all()
            )
            emails = [e.lower() for e in session.scalars(select(Contact.email))]
        result = _summary(
            relay, emails, counts, args, started, done, killed_at, host2_before_kill, recipients
        )
        rt.close()
        # a message in flight when its host died is recorded unknown and never resent
        # (marketing is at most once): it may be missing, never doubled
        if result["duplicates"] or result["missing"] > counts.get("unknown", 0):
            sys.exit(1)
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if controller is not None:
            controller.stop()
        forwarders.stop()
        remove_network()
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": db_name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}"'))
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(f"{db_name}*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
