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
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import create_engine, func, select, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.campaigns import campaign_status  # noqa: E402
from mailer.config import Settings  # noqa: E402
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
from tests.smtp_fixtures import start_smtp_sink  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEMPLATE = "promotions/open-enrollment"
DKIM_SELECTOR = "bench"
DKIM_DOMAIN = "cpi.example"


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-") as tmp:
        _bench(args, Path(tmp))


def _bench(args: argparse.Namespace, tmp: Path) -> None:

    db_name = f"mailer_bench_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    sink = start_smtp_sink()
    env = dict(os.environ)
    env.update(
        MAILER_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        MAILER_BROKER_URL="redis://127.0.0.1:6379/0",
        MAILER_BROKER_NAMESPACE=db_name,
        MAILER_SMTP_URL=sink.url,
        MAILER_SMTP_POOL_SIZE=str(args.pool),
        MAILER_USER="bench",
        MAILER_VAR_DIR=str(ROOT / "var" / "bench"),
    )
    if args.dkim:
        env.update(
            MAILER_DKIM_SELECTOR=DKIM_SELECTOR,
            MAILER_DKIM_DOMAIN=DKIM_DOMAIN,
            MAILER_DKIM_PRIVATE_KEY_PATH=str(_throwaway_key(tmp)),
        )
    os.environ.update(env)
    workers = None
    try:

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
            "11",
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

        source_rate = _smtp_source(sink.port, 20_000, message_size)

        workers = subprocess.Popen(
            [
                "mailer",
                "worker",
                "--processes",
                str(args.processes),
                "--threads",
                str(args.threads),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(3)  # let the worker processes boot and connect to Redis
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
        cpu_before = _cpu_by_component()
        launched = time.perf_counter()
        launched_at = dt.datetime.now(dt.UTC)
        run("mailer", "campaign", "launch", "1", "--no-wait")
        planned = time.perf_counter()
        deadline = time.monotonic() + 600
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"campaign not finished after 600 s: {campaign_status(rt, 1)}")
            with rt.sessions() as session:
                status = session.scalar(select(Campaign.status).where(Campaign.id == 1))
            if status != "sending":
                break
            time.sleep(0.05)
        with rt.sessions() as session:
            first_sent = session.scalar(select(func.min(Send.sent_at)))
            started = session.scalar(select(Campaign.launched_at).where(Campaign.id == 1))
        # the send log's own clock: when the first message was accepted by the sink, counted
        # from the command's start and from the moment launch began planning
        first_s = (first_sent - launched_at).total_seconds() if first_sent else None
        first_after_plan_s = (first_sent - started).total_seconds() if first_sent else None
        elapsed = time.perf_counter() - launched
        cpu_after = _cpu_by_component()
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
            "smtp_source_msg_per_s": round(source_rate),
            "ratio": round(sent / elapsed / source_rate, 3),
            "message_bytes": message_size,
            "worker_peak_rss_mb": peak_mb,
            "processes": args.processes,
            "threads": args.threads,
            "pool": args.pool,
            "dkim": args.dkim,
        }
        print(f"smtp-source, 8 sessions, {message_size} B: {source_rate:,.0f} msg/s")
        print(
            f"mailer campaign, {n:,} recipients{' (DKIM-signed)' if args.dkim else ''}: "
            f"{sent:,} sent in {elapsed:.1f} s = "
            f"{sent / elapsed:,.0f} msg/s end to end (launch incl. planning "
            f"{planned - launched:.2f} s; first message {first_s or 0:.2f} s after the command "
            f"started, {first_after_plan_s or 0:.2f} s after planning began)"
        )
        print(
            f"ratio to smtp-source: {result['ratio']:.2f}; worker peak RSS per process: "
            f"{peak_mb} MB"
        )
        cpu_us = {
            k: round((cpu_after.get(k, 0) - cpu_before.get(k, 0)) / max(sent, 1) * 1e6)
            for k in cpu_after
        }
        result["cpu_us_per_message"] = cpu_us
        print(
            "CPU per message by component (µs): "
            + ", ".join(f"{k} {v}" for k, v in sorted(cpu_us.items()))
        )
        print(json.dumps(result))
        rt.close()
    finally:
        if workers is not None:
            os.killpg(workers.pid, 15)
            workers.wait(30)
        sink.process.kill()
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
        if not dkim.verify(built.data, dnsfunc=lambda *_: record):
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


def _smtp_source(port: int, count: int, size: int) -> float:
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
            f"127.0.0.1:{port}",
        ],
        check=True,
    )
    return count / (time.perf_counter() - started)


def _cpu_by_component() -> dict[str, float]:
    """CPU seconds used so far by the processes of each part of the pipeline."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if "workers.main" in cmdline or "workers.process" in cmdline:
            part = "workers"
        elif cmdline.startswith("postgres"):
            part = "postgresql"
        elif "smtp-sink" in cmdline:
            part = "smtp-sink"
        elif "redis-server" in cmdline:
            part = "redis"
        elif "mailer campaign" in cmdline or "bench_campaign" in cmdline:
            part = "cli+bench"
        else:
            continue
        # utime and stime are fields 14 and 15 of /proc/PID/stat (12 and 13 after the name)
        totals[part] = totals.get(part, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


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
