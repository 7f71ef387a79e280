"""The driver behind scripts/bench-policy (see there). Prints the figures and one JSON line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer import policy  # noqa: E402
from mailer.access import SYSTEM, actor_for_username  # noqa: E402
from mailer.config import Settings  # noqa: E402
from mailer.contacts.sample import load_sample_into_db, sample_contact  # noqa: E402
from mailer.models import Campaign, PolicyVersion, Send, User  # noqa: E402
from mailer.runtime import Runtime, open_runtime  # noqa: E402
from tests.bench_processes import start_workers, stop_workers  # noqa: E402
from tests.smtp_fixtures import SmtpSink, start_smtp_sink  # noqa: E402
from tests.wire_check import Expected, WireCheck, greeted, packet_socket_problem  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
SAMPLE_SEED = 11
T = TypeVar("T")


class SinkClock:
    """Reads smtp-sink's running counter (`-c`, unbuffered): when it accepted its first
    message, on the machine's clock, and how many it accepted in all."""

    def __init__(self, sink: SmtpSink) -> None:
        self.first_accepted: float | None = None
        self.accepted = 0
        self._stream = sink.process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._stream is not None
        while chunk := self._stream.read1(65536):  # type: ignore[attr-defined]
            now = time.time()
            counts = re.findall(rb"mesg=(\d+)", chunk)
            if counts:
                self.accepted = int(counts[-1])
                if self.first_accepted is None and self.accepted > 0:
                    self.first_accepted = now


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench-policy")
    parser.add_argument("--organizations", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="no in-run check of the notices (to measure what the check costs)",
    )
    args = parser.parse_args()
    # a policy notice: no List-Unsubscribe; contacts as load_sample_into_db makes them
    expect = greeted(lambda address: sample_contact(address, SAMPLE_SEED), opt_out=False)
    if not args.no_check and (problem := packet_socket_problem()):
        raise SystemExit(f"scripts/bench-policy: {problem}")
    _bench(args, None if args.no_check else expect)


def _bench(args: argparse.Namespace, expect: Callable[[str], Expected | None] | None) -> None:
    db_name = f"mailer_bench_policy_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    sink = start_smtp_sink("-c", stdout=subprocess.PIPE)
    clock = SinkClock(sink)
    env = dict(os.environ)
    env.update(
        MAILER_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}",
        MAILER_SECRET_KEY="bench-policy-secret-0123456789",
        MAILER_BROKER_URL=REDIS_URL,
        MAILER_BROKER_NAMESPACE=db_name,
        MAILER_SMTP_URL=sink.url,
        MAILER_USER="ada",
        MAILER_VAR_DIR=str(ROOT / "var" / "bench-policy"),
    )
    os.environ.update(env)
    workers = None
    wire: WireCheck | None = None
    try:
        # unless --no-check, what is sent to the sink is read off the wire from now on and checked
        wire = WireCheck(sink.port, expect).open() if expect is not None else None
        subprocess.run(
            ["mailer", "db", "upgrade"], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL
        )
        rt = open_runtime(Settings.from_env())
        _load(rt, args.organizations)
        workers = start_workers(env, ROOT, args.processes, args.threads)
        result: dict[str, Any] = {"organizations": args.organizations}
        result.update(_publish(rt, env, clock))
        failure = _verify(result, clock.accepted, wire)
        stop_workers(workers)
        workers = None
        result.update(_coverage_and_resend(rt, result["campaign_id"]))
        print(json.dumps(result))
        rt.close()
        if failure:
            raise SystemExit(failure)
    finally:
        if workers is not None:
            stop_workers(workers)
        sink.process.kill()
        sink.process.wait()
        if wire is not None:
            wire.close()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{db_name}*"))
        if keys:
            client.delete(*keys)


def _load(rt: Runtime, organizations: int) -> None:
    """Sample organizations and contacts, every 211th address suppressed, and an admin."""
    started = time.perf_counter()
    today = dt.datetime.now(dt.UTC).date()
    counts = load_sample_into_db(rt, organizations, seed=SAMPLE_SEED, actor=SYSTEM, today=today)
    with rt.sessions.begin() as s:
        s.add(User(username="ada", display_name="Ada Admin", email="ada@cpi.example", role="admin"))
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO suppressions (address, address_hash, reason, created_at, detail) "
                "SELECT email, address_hash, 'hard_bounce', now(), '' FROM contacts "
                "WHERE id % 211 = 0"
            )
        )
        conn.exec_driver_sql("ANALYZE")
    print(
        f"loaded {counts['organizations']:,} organizations, {counts['contacts']:,} contacts "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _publish(rt: Runtime, env: dict[str, str], clock: SinkClock) -> dict[str, Any]:
    """`mailer policy publish --material` with workers sending into the sink, to the end."""
    files = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    (files / "text.txt").write_text("policy text v2\n")
    (files / "summary.txt").write_text("What changed.\n- one change\n")
    effective = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
    command = ["mailer", "policy", "publish", "--version", "2", "--effective", str(effective)]
    command += ["--text", str(files / "text.txt"), "--summary", str(files / "summary.txt")]
    command += ["--material", "--json"]
    started = time.time()
    out = subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    returned = time.time()
    campaign_id = json.loads(out.stdout)["campaign_id"]
    deadline = time.monotonic() + 900
    while True:
        with rt.sessions() as s:
            status = s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        if status != "sending":
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"notice campaign {campaign_id} still {status} after 900 s")
        time.sleep(0.05)
    time.sleep(0.5)  # the sink's last counter lines
    with rt.sessions() as s:
        published_at = s.scalar(
            select(PolicyVersion.published_at).where(PolicyVersion.version == "2")
        )
        completed_at = s.scalar(select(Campaign.completed_at).where(Campaign.id == campaign_id))
        first_sent_at, sent = s.execute(
            select(func.min(Send.sent_at), func.count(Send.sent_at)).where(
                Send.campaign_id == campaign_id, Send.status == "sent"
            )
        ).one()
    if clock.first_accepted is None:
        raise SystemExit("the sink accepted nothing")
    if published_at is None or completed_at is None or first_sent_at is None:
        raise SystemExit(
            f"the notice did not finish: published {published_at}, completed {completed_at}"
        )
    began = published_at.timestamp()  # publish_policy's own start, inside the command
    figures = {
        "campaign_id": campaign_id,
        "status": status,
        "first_message_s": round(clock.first_accepted - started, 3),
        "first_message_after_publish_began_s": round(clock.first_accepted - began, 3),
        "first_sent_at_in_send_log_s": round(first_sent_at.timestamp() - started, 3),
        "cli_start_up_s": round(began - started, 3),
        "publish_command_s": round(returned - started, 2),
        "notice_s": round(completed_at.timestamp() - started, 2),
        "sent": sent,
        "sink_accepted": clock.accepted,
    }
    figures["msg_per_s"] = round(sent / figures["notice_s"])
    print(
        f"publish (`mailer policy publish --material`, {sent:,} notices): first message "
        f"accepted by the sink {figures['first_message_s']:.2f} s after the command started "
        f"({figures['first_message_after_publish_began_s']:.2f} s after publishing began, "
        f"{figures['cli_start_up_s']:.2f} s of CLI start-up before that); the send log's first "
        f"sent_at {figures['first_sent_at_in_send_log_s']:.2f} s"
    )
    print(
        f"  the command returned after {figures['publish_command_s']:.2f} s (whole plan "
        f"written); last notice recorded {figures['notice_s']:.1f} s after the start = "
        f"{figures['msg_per_s']:,} msg/s; sent {sent:,} by the send log, {clock.accepted:,} "
        "by the sink's counter"
    )
    return figures


def _verify(result: dict[str, Any], sink_counted: int, wire: WireCheck | None) -> str | None:
    """What went wrong, if anything: the send log, the sink's own counter and (unless
    --no-check) the notices seen on the wire must agree, and every notice checked must
    pass."""
    sent = result["sent"]
    failure = None
    if sink_counted != sent:
        failure = f"the send log says {sent} sent but smtp-sink counted {sink_counted}"
        print(f"  {failure}")
    if wire is None:
        return failure
    seen = wire.finish()
    result["on_the_wire"], result["checked"] = seen.messages, seen.checked
    return seen.report(sent, sink_counted) or failure


def _timed(label: str, fn: Callable[[], T]) -> tuple[T, int]:
    started = time.perf_counter()
    result = fn()
    ms = round((time.perf_counter() - started) * 1000)
    print(f"{label}: {ms} ms")
    return result, ms


def _coverage_and_resend(rt: Runtime, campaign_id: int) -> dict[str, Any]:
    """Coverage with every 50th client's notices marked failed, a resend that requeues them
    (nothing is sent: the workers are gone), and a resend that finds nothing to do."""
    with rt.sessions() as s:
        ada = actor_for_username(s, "ada")
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE sends SET status = 'failed', smtp_code = 451, sent_at = NULL "
                "WHERE campaign_id = :c AND status = 'sent' AND organization_id % 50 = 0"
            ),
            {"c": campaign_id},
        )
        conn.exec_driver_sql("ANALYZE")
    report, coverage_ms = _timed("coverage", lambda: policy.coverage(rt, "2", actor=SYSTEM))
    print(
        f"  eligible clients {len(report.clients):,}, reached {len(report.reached):,}, "
        f"not reached {len(report.not_reached):,}; contacts {report.contacts}"
    )
    resent, resend_ms = _timed(
        "resend (failed rows of every 50th client)",
        lambda: policy.resend_notice(rt, "2", actor=ada, dispatch=None),
    )
    print(f"  added {resent.added:,}, requeued {resent.requeued:,}, batches {resent.batches}")
    with rt.engine.begin() as conn:
        conn.execute(
            text("UPDATE sends SET status = 'sent' WHERE campaign_id = :c AND status = 'queued'"),
            {"c": campaign_id},
        )
        conn.execute(
            text("UPDATE campaigns SET status = 'completed' WHERE id = :c"), {"c": campaign_id}
        )
    again, again_ms = _timed(
        "resend with nothing new", lambda: policy.resend_notice(rt, "2", actor=ada, dispatch=None)
    )
    print(f"  queued {again.queued}")
    return {
        "coverage_ms": coverage_ms,
        "eligible_clients": len(report.clients),
        "resend_ms": resend_ms,
        "requeued": resent.requeued,
        "resend_nothing_new_ms": again_ms,
    }


if __name__ == "__main__":
    main()
