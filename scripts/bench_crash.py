"""The driver behind scripts/bench-crash (see there). Prints a table and one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.smtp_fixtures import start_smtp_sink  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEMPLATES = {"promotions": "promotions/open-enrollment", "service": "service/planned-maintenance"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench-crash")
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs per campaign")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(TEMPLATES), help="run one campaign kind")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()

    db_name = f"mailer_crash_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    work = Path(tempfile.mkdtemp(prefix="mailer-bench-crash-"))
    work.chmod(0o777)  # smtp-sink writes its dump as nobody
    dump = work / "sink.dump"
    sink = start_smtp_sink("-D", str(dump))
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    env = dict(os.environ)
    env.update(
        MAILER_DATABASE_URL=db_url,
        MAILER_BROKER_URL="redis://127.0.0.1:6379/0",
        MAILER_BROKER_NAMESPACE=db_name,
        MAILER_SMTP_URL=sink.url,
        MAILER_SMTP_POOL_SIZE="4",
        MAILER_USER="bench",
        MAILER_VAR_DIR=str(work / "var"),
        MAILER_LEASE_S="60",
        MAILER_SCHEDULER_INTERVAL_S="1",
    )
    engine = create_engine(db_url)
    procs: list[subprocess.Popen[bytes]] = []

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True, text=True)
        return done.stdout

    def start(*cmd: str, log: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=(work / log).open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(process)
        return process

    results = []
    try:
        run("mailer", "db", "upgrade")
        run("mailer", "users", "create", "bench", "--role", "admin", "--name", "Bench",
            "--email", "bench@cpi.example")  # fmt: skip
        run("mailer", "sample-data", "--organizations", str(args.recipients), "--seed", "11",
            "--into-db", "--contacts-per-org", "1-1")  # fmt: skip
        with engine.begin() as conn:
            conn.execute(text("UPDATE contacts SET status = 'active'"))
            # every organization an active client, so the service notice reaches all N too
            conn.execute(
                text(
                    "UPDATE organizations SET kind = 'client', "
                    "agreement_started_on = '2020-01-01', agreement_ended_on = NULL"
                )
            )
        start("mailer", "scheduler", log="scheduler.log")
        worker = start(
            "mailer", "worker", "-p", str(args.processes), "-t", str(args.threads), log="worker.log"
        )
        _wait_for_line(work / "worker.log", "mailer worker ready", worker)
        kinds = [args.only] if args.only else ["promotions", "service"]
        for kind in kinds:
            results.append(_scenario(kind, args, run, engine, worker, dump))
        for result in results:
            print(
                f"{result['campaign']:<11} {result['recipients']:,} recipients, "
                f"{result['kills']} SIGKILLs: lost {result['lost']}, duplicates "
                f"{result['duplicates']} ({result['duplicates_pct']:.3f}%), unknown "
                f"{result['unknown']} ({result['unknown_pct']:.3f}%), {result['seconds']:.1f} s "
                f"({result['sent_per_s']:,.0f} msg/s)"
            )
        print(json.dumps(results))
        log = (work / "worker.log").read_text(errors="replace")
        if "deadlock" in log.lower():
            print("warning: a deadlock was logged (see the worker log)")
    finally:
        for process in procs:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in procs:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        sink.process.kill()
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": db_name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}"'))
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept database {db_name} and {work}")
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(f"{db_name}*"))
        if keys:
            client.delete(*keys)


def _scenario(kind, args, run, engine, worker, dump: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    out = run("mailer", "campaign", "create", "--name", f"crash {kind}", "--category", kind,
              "--template", TEMPLATES[kind], "--json")  # fmt: skip
    cid = int(json.loads(out)["id"])
    offset = dump.stat().st_size if dump.exists() else 0
    started = time.perf_counter()
    run("mailer", "campaign", "launch", str(cid), "--no-wait")
    with engine.connect() as conn:
        total = int(
            conn.execute(
                text("SELECT count(*) FROM sends WHERE campaign_id = :c"), {"c": cid}
            ).scalar()
            or 0
        )
    # kill a worker process each time another tenth of the campaign has been sent
    kills = 0
    rng = random.Random(7)
    while True:
        counts = _counts(engine, cid)
        status = _status(engine, cid)
        if status != "sending":
            break
        done = counts.get("sent", 0)
        if kills < args.kills and done >= (kills + 1) * total / (args.kills + 2):
            children = _children(worker.pid)
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)
                kills += 1
        if time.perf_counter() - started > 900:
            raise SystemExit(f"campaign {cid} not finished after 900 s: {counts}")
        time.sleep(0.25)  # the count is a scan of the campaign's sends: not too often
    elapsed = time.perf_counter() - started
    counts = _counts(engine, cid)
    received = _received(dump, offset)
    with engine.connect() as conn:
        every = text("SELECT email FROM sends WHERE campaign_id = :c")
        emails = set(conn.execute(every, {"c": cid}).scalars())
        unknown = set(
            conn.execute(
                text("SELECT email FROM sends WHERE campaign_id = :c AND status = 'unknown'"),
                {"c": cid},
            ).scalars()
        )
        skipped_or_failed = set(
            conn.execute(
                text(
                    "SELECT email FROM sends WHERE campaign_id = :c "
                    "AND status IN ('skipped', 'failed', 'cancelled')"
                ),
                {"c": cid},
            ).scalars()
        )
    lost = emails - set(received) - unknown - skipped_or_failed
    duplicates = sum(n - 1 for address, n in received.items() if address in emails)
    return {
        "campaign": kind,
        "status": _status(engine, cid),
        "recipients": total,
        "kills": kills,
        "counts": counts,
        "lost": len(lost),
        "duplicates": duplicates,
        "duplicates_pct": round(100 * duplicates / max(total, 1), 4),
        "unknown": len(unknown),
        "unknown_pct": round(100 * len(unknown) / max(total, 1), 4),
        "unknown_received": len(unknown & set(received)),
        "seconds": round(elapsed, 1),
        "sent_per_s": round(counts.get("sent", 0) / elapsed),
    }


def _received(dump: Path, offset: int) -> Counter[str]:
    """Recipients of the messages smtp-sink dumped after `offset`."""
    found: Counter[str] = Counter()
    with dump.open("rb") as f:
        f.seek(offset)
        for line in f:
            if line.startswith(b"X-Rcpt-Args: <"):
                found[line[14:].split(b">", 1)[0].decode(errors="replace").lower()] += 1
    return found


def _counts(engine, cid: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, count(*) FROM sends WHERE campaign_id = :c GROUP BY status"),
            {"c": cid},
        )
        return {s: int(n) for s, n in rows}


def _status(engine, cid: int) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return str(
            conn.execute(text("SELECT status FROM campaigns WHERE id = :c"), {"c": cid}).scalar()
        )


def _children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            found.append(int(proc.name))
    return found


def _wait_for_line(log: Path, needle: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while needle not in (log.read_text(errors="replace") if log.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"no {needle!r}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
