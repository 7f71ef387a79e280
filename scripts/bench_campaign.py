"""The driver behind scripts/bench (see there). Prints a table and one JSON line."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, create_engine, func, select, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.campaigns import campaign_status  # noqa: E402
from mailer.config import Settings  # noqa: E402
from mailer.contacts.sample import sample_contact  # noqa: E402
from mailer.enums import Category  # noqa: E402
from mailer.messages import (  # noqa: E402
    CampaignInfo,
    CampaignMessages,
    SenderIdentity,
    check_template,
)
from mailer.messages.context import SAMPLE_RECIPIENT  # noqa: E402
from mailer.models import Campaign, Contact, Send  # noqa: E402
from mailer.runtime import open_runtime  # noqa: E402
from tests.bench_processes import start_workers, stop_workers  # noqa: E402
from tests.smtp_fixtures import SmtpSink, start_smtp_sink  # noqa: E402
from tests.wire_check import Expected, WireCheck, greeted, packet_socket_problem  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEMPLATE = "promotions/open-enrollment"
DKIM_SELECTOR = "bench"
DKIM_DOMAIN = "cpi.example"
SAMPLE_SEED = 11
#: How often the bench looks at the campaign (and at CPU use) while it sends: its own CPU comes
#: out of the two cores mailer gets, and the end time comes from the campaign, not the poll.
POLL_S = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pool", type=int, default=4, help="SMTP connections per thread")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--dkim", action="store_true", help="sign every message (throwaway RSA-2048 key)"
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="no in-run check of the messages (to measure what the check costs)",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="log every statement of the workers and the launch (server log) and print counts",
    )
    args = parser.parse_args()
    expect = greeted(
        lambda address: sample_contact(address, SAMPLE_SEED, contacts_per_org=(1, 1)),
        opt_out=True,  # a promotion (TEMPLATE)
    )
    if not args.no_check and (problem := packet_socket_problem()):
        raise SystemExit(f"scripts/bench: {problem}")
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
        _bench(args, Path(tmp), None if args.no_check else expect)


def _bench(
    args: argparse.Namespace, tmp: Path, expect: Callable[[str], Expected | None] | None
) -> None:

    db_name = f"mailer_bench_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    # the campaign's smtp-sink counts what it takes (-c)
    sink = start_smtp_sink(counter=tmp / "sink-counter")
    env = dict(os.environ)
    env.update(
        MAILER_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        MAILER_BROKER_URL="redis://127.0.0.1:6379/0",
        MAILER_BROKER_NAMESPACE=db_name,
        MAILER_SMTP_URL=sink.url,
        MAILER_SMTP_POOL_SIZE=str(args.pool),
        MAILER_USER="bench",
        MAILER_VAR_DIR=str(ROOT / "var" / "bench"),
        MAILER_PUBLIC_BASE_URL="https://mail.cpi.example",  # https, as production must
    )
    if args.dkim:
        env.update(
            MAILER_DKIM_SELECTOR=DKIM_SELECTOR,
            MAILER_DKIM_DOMAIN=DKIM_DOMAIN,
            MAILER_DKIM_PRIVATE_KEY_PATH=str(_throwaway_key(tmp)),
        )
    os.environ.update(env)
    workers = None
    wire: WireCheck | None = None
    try:
        # unless --no-check, what is sent to the sink is read off the wire from now on, before
        # the first connection, and checked
        wire = WireCheck(sink.port, expect).open() if expect is not None else None

        def run(*cmd: str) -> None:
            subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)

        run("mailer", "db", "upgrade")
        run(
            "mailer",
            "users",
            "create",
            "bench",
            "--role",
            "admin",
            "--name",
            "Bench",
            "--email",
            "bench@cpi.example",
        )
        t0 = time.perf_counter()
        run(
            "mailer",
            "sample-data",
            "--organizations",
            str(args.recipients),
            "--seed",
            str(SAMPLE_SEED),
            "--into-db",
            "--contacts-per-org",
            "1-1",
        )
        rt = open_runtime(Settings.from_env())
        with rt.sessions.begin() as session:
            session.execute(update(Contact).values(status="active"))
            n = session.scalar(select(func.count()).select_from(Contact))
        print(f"loaded {n} contacts in {time.perf_counter() - t0:.1f} s")
        message_size = _message_size(rt)

        # the machine's ceiling: the median of three runs before the campaign, as one short
        # run of smtp-source moves by a third on a shared machine (not after it: autovacuum
        # then works on the send log the campaign wrote, and smtp-source reached less)
        source_rates = [_smtp_source(20_000, message_size) for _ in range(3)]
        source_rate = sorted(source_rates)[1]
        log_from = _log_statements(admin, db_name) if args.statements else None
        sink_before = sink.delivered()  # 0: smtp-source has a sink of its own

        workers = start_workers(env, ROOT, args.processes, args.threads)
        run(
            "mailer",
            "campaign",
            "create",
            "--name",
            "bench",
            "--category",
            "promotions",
            "--template",
            TEMPLATE,
        )
        cpu = _CpuMeter(admin, db_name, workers.pid, sink.process.pid)
        launched = time.perf_counter()
        launched_at = dt.datetime.now(dt.UTC)
        launch = subprocess.Popen(
            ["mailer", "campaign", "launch", "1", "--no-wait"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        while launch.poll() is None:
            cpu.sample_database()  # planning: its database backend ends with it
            time.sleep(0.05)
        if launch.returncode:
            raise SystemExit(f"mailer campaign launch exited with {launch.returncode}")
        planned = time.perf_counter()
        deadline = time.monotonic() + 600
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"campaign not finished after 600 s: {campaign_status(rt, 1)}")
            with rt.sessions() as session:
                status = session.scalar(select(Campaign.status).where(Campaign.id == 1))
            if status != "sending":
                break
            # seldom: the bench shares the two cores with what it measures, and the end is
            # read from the campaign's own completed_at, not from when this loop saw it
            cpu.sample()
            time.sleep(POLL_S)
        with rt.sessions() as session:
            first_sent, last_sent = session.execute(
                select(func.min(Send.sent_at), func.max(Send.sent_at))
            ).one()
            started, completed = session.execute(
                select(Campaign.launched_at, Campaign.completed_at).where(Campaign.id == 1)
            ).one()
        # the send log's own clock: when the first message was accepted by the sink, counted
        # from the command's start and from the moment launch began planning
        first_s = (first_sent - launched_at).total_seconds() if first_sent else None
        first_after_plan_s = (
            (first_sent - started).total_seconds() if first_sent and started else None
        )
        # launch → the campaign's completion, as the worker that recorded its last send dated
        # it (the same clock as launched_at); the poll above may see it up to POLL_S later
        elapsed = (
            (completed - launched_at).total_seconds()
            if completed is not None
            else time.perf_counter() - launched
        )
        # steady state: the rate between the first and the last message recorded, start-up,
        # planning's head start and the run's tail left out (what listmonk's figure compares to)
        steady_s = (last_sent - first_sent).total_seconds() if first_sent and last_sent else 0.0
        cpu_used = cpu.used()
        peak_mb = _peak_rss_mb(workers.pid)
        summary = campaign_status(rt, 1)
        sent = summary.counts.get("sent", 0)
        result = {
            "recipients": n,
            "sent": sent,
            "counts": summary.counts,
            "seconds": round(elapsed, 2),
            "plan_s": round(planned - launched, 2),
            "first_message_s": round(first_s or 0, 3),
            "first_message_after_planning_began_s": round(first_after_plan_s or 0, 3),
            "msg_per_s": round(sent / elapsed),
            "steady_msg_per_s": round(sent / steady_s) if steady_s > 0 else None,
            "smtp_source_msg_per_s": round(source_rate),
            "smtp_source_runs": [round(rate) for rate in source_rates],
            "ratio": round(sent / elapsed / source_rate, 3),
            "message_bytes": message_size,
            "worker_peak_rss_mb": peak_mb,
            "processes": args.processes,
            "threads": args.threads,
            "pool": args.pool,
            "dkim": args.dkim,
        }
        print(
            f"smtp-source, 8 sessions, {message_size} B: {source_rate:,.0f} msg/s (the median of "
            f"{', '.join(f'{rate:,.0f}' for rate in source_rates)}, before the campaign)"
        )
        print(
            f"mailer campaign, {n:,} recipients{' (DKIM-signed)' if args.dkim else ''}: "
            f"{sent:,} sent in {elapsed:.1f} s = "
            f"{sent / elapsed:,.0f} msg/s end to end (launch incl. planning "
            f"{planned - launched:.2f} s; first message {first_s or 0:.2f} s after the command "
            f"started, {first_after_plan_s or 0:.2f} s after planning began); steady "
            f"(first → last message recorded): {result['steady_msg_per_s'] or 0:,} msg/s"
        )
        print(
            f"ratio to smtp-source: {result['ratio']:.2f}; worker peak RSS per process: "
            f"{peak_mb} MB"
        )
        failure = _verify(result, sink.delivered() - sink_before, wire)
        cpu_us = {k: round(v / max(sent, 1) * 1e6) for k, v in cpu_used.items()}
        result["cpu_us_per_message"] = cpu_us
        print(
            "CPU per message by component (µs): "
            + ", ".join(f"{k} {v}" for k, v in sorted(cpu_us.items()))
        )
        print(json.dumps(result))
        _print_statements(db_name, log_from, sent)
        rt.close()
        if failure:
            raise SystemExit(failure)
    finally:
        if workers is not None:
            stop_workers(workers)
        _stop_sink(sink, wire)
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": db_name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}"'))
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(f"{db_name}*"))
        if keys:
            client.delete(*keys)


def _message_size(rt) -> int:  # type: ignore[no-untyped-def]
    """Bytes of one message of the bench template, so smtp-source sends the same size."""
    template = check_template(rt.settings, TEMPLATE)
    built = CampaignMessages(
        rt.settings,
        template=template,
        campaign=CampaignInfo(id=1, name="x", category=Category.PROMOTIONS),
        sender=SenderIdentity("CPI", "news@cpi.example"),
    ).build(SAMPLE_RECIPIENT)
    email.message_from_bytes(built.data)
    if rt.settings.dkim_private_key_path:
        pem = Path(rt.settings.dkim_private_key_path).read_bytes()
        public = serialization.load_pem_private_key(pem, password=None).public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
        if not dkim.verify(built.data, dnsfunc=lambda *_, **__: record):
            raise SystemExit("the DKIM signature of a bench message does not verify")
    return len(built.data)


def _throwaway_key(directory: Path) -> Path:
    """A fresh RSA-2048 DKIM key for this run only, in a temporary directory."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / f"{DKIM_SELECTOR}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _smtp_source(count: int, size: int) -> float:
    """smtp-source's rate into a sink of its own, started as the campaign's is: the machine's
    ceiling (docs/performance.md §4)."""
    sink = start_smtp_sink()
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                "/usr/sbin/smtp-source",
                "-s",
                "8",
                "-m",
                str(count),
                "-l",
                str(size),
                "-d",
                f"127.0.0.1:{sink.port}",
            ],
            check=True,
        )
        return count / (time.perf_counter() - started)
    finally:
        sink.process.kill()
        sink.process.wait()


def _stop_sink(sink: SmtpSink, wire: WireCheck | None) -> None:
    sink.process.kill()
    sink.process.wait()
    if wire is not None:
        wire.close()


def _verify(result: dict[str, Any], sink_counted: int, wire: WireCheck | None) -> str | None:
    """What went wrong, if anything: the send log, the sink's own counter and (unless
    --no-check) the messages seen on the wire must agree, and every message checked must
    pass."""
    sent = result["sent"]
    result["sink_counted"] = sink_counted
    print(
        f"delivered: {sent:,} by the send log, {sink_counted:,} by smtp-sink's own counter"
        + ("" if sink_counted == sent else " — THEY DISAGREE")
    )
    failure = None
    if sink_counted != sent:
        failure = (
            f"the send log says {sent} sent but smtp-sink counted {sink_counted}: the bench "
            "is not measuring what it reports"
        )
    if wire is None:
        return failure
    seen = wire.finish()
    result["on_the_wire"], result["checked"] = seen.messages, seen.checked
    return seen.report(sent, sink_counted) or failure


class _CpuMeter:
    """CPU seconds used by this run's own processes, by component, from now on.

    Only this run's: the machine is shared, and another bench's workers, sink or database
    backends ending meanwhile would otherwise count (negatively). PostgreSQL is this run's
    database's backends (sampled while the campaign runs, so a backend that exits, like the
    launch command's, still counts); Redis is the whole server, shared with whoever uses it.
    """

    def __init__(self, admin: Engine, db_name: str, workers_pgid: int, sink_pid: int):
        self._admin = admin
        self._db_name = db_name
        self._workers_pgid = workers_pgid
        self._sink_pid = sink_pid
        self._seen: dict[int, tuple[str, float]] = {}
        self._bench_start = self._bench_s()
        self._samples = 0
        self._sample()
        self._base = {pid: s for pid, (_, s) in self._seen.items()}

    def sample(self) -> None:
        """Look at every process of the run again."""
        self._sample()

    def sample_database(self) -> None:
        """This run's database backends (a command's come and go with it); the other
        processes every tenth call: walking /proc costs the cores shared with what is measured."""
        self._samples += 1
        self._sample(is_walking=self._samples % 10 == 0)

    def used(self) -> dict[str, float]:
        self._sample()
        totals = {"cli+bench": self._bench_s() - self._bench_start}
        for pid, (part, seconds) in self._seen.items():
            totals[part] = totals.get(part, 0.0) + seconds - self._base.get(pid, 0.0)
        return totals

    def _sample(self, *, is_walking: bool = True) -> None:
        """CPU of the database backends; with `is_walking`, of the sink, the workers and Redis
        too (found by walking /proc)."""
        with self._admin.connect() as conn:
            backends = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": self._db_name}
            ).scalars()
            parts = {pid: "postgresql" for pid in backends}
        if is_walking:
            parts.update(self._other_processes())
        for pid, part in parts.items():
            seconds = _cpu_s(pid)
            if seconds is not None:
                self._seen[pid] = (part, seconds)

    def _other_processes(self) -> dict[int, str]:
        parts = {self._sink_pid: "smtp-sink"}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            pid = int(proc.name)
            try:
                if os.getpgid(pid) == self._workers_pgid:
                    parts[pid] = "workers"
                elif "redis-server" in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    parts[pid] = "redis"
            except (OSError, ProcessLookupError):
                continue
        return parts

    @staticmethod
    def _bench_s() -> float:
        """This process and the commands it ran and waited for (launch)."""
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def _cpu_s(pid: int) -> float | None:
    """CPU seconds a process has used, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of /proc/PID/stat (12 and 13 after the name)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The cluster's server log (Debian's layout), read for --statements.
_SERVER_LOG = Path("/var/log/postgresql/postgresql-15-main.log")


def _log_statements(admin: Engine, db_name: str) -> int:
    """Have the server log every statement of the bench database's new sessions; returns
    where in the server log they will begin."""
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{db_name}" SET log_min_duration_statement = 0'))
    try:
        return _SERVER_LOG.stat().st_size
    except OSError:
        return 0


def _print_statements(db_name: str, log_from: int | None, sent: int) -> None:
    """Statements the bench database ran since `log_from` in the server log, by kind: count,
    count per 1,000 messages and total server time (needs read access to the server log).
    Nothing without `log_from` (no --statements)."""
    if log_from is None:
        return
    try:
        with _SERVER_LOG.open("rb") as f:
            f.seek(log_from)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError as exc:
        print(f"statements: cannot read {_SERVER_LOG} ({exc}); run as root or postgres")
        return
    marker = f"@{db_name} LOG:  duration: "
    kinds: dict[str, list[float]] = {}
    for number, line in enumerate(lines):
        _, found, rest = line.partition(marker)
        if not found:
            continue
        ms, _, what = rest.partition(" ms  ")
        step, _, sql = what.partition(": ")
        if step.startswith(("parse", "bind")):
            continue  # the execute line of the same statement follows
        if not sql.strip():  # the statement's text begins on the next line
            sql = " ".join(lines[number + 1 : number + 3])
        key = " ".join(sql.split())[:70] or step
        entry = kinds.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += float(ms)
    print(f"statements of {db_name} (count, per 1,000 messages, total server ms):")
    for key, (count, total) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
        per_k = count * 1000 / max(sent, 1)
        print(f"  {count:8.0f} {per_k:8.1f} {total:10.1f}  {key}")


def _peak_rss_mb(group_leader: int) -> int:
    """The largest VmHWM among the worker processes (children of `mailer worker`)."""
    peak = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            if os.getpgid(int(proc.name)) != group_leader:
                continue
        except (OSError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) // 1024)
    return peak


if __name__ == "__main__":
    main()
