"""A real deployment for tests: `mailer worker` and `mailer scheduler` processes on their own
database, a Redis namespace (or a private Redis server) and a fault SMTP server; a private
PostgreSQL cluster for tests that restart the database.

Only what the tests start is ever stopped: the machine's shared servers are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from mailer.transports.capture import free_port
from tests.conftest import ROOT, TEST_SECRET
from tests.smtpd import FaultServer

#: The mailer command, run by this interpreter (the test's virtualenv).
MAILER = [sys.executable, "-c", "from mailer.cli import main; main()"]
SHARED_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
SHARED_REDIS = "redis://127.0.0.1:6379/0"
TEMPLATES = {
    "promotions": "promotions/open-enrollment",
    "features": "features/benefitelect-enrollment-site",
    "service": "service/planned-maintenance",
}


class Proc:
    """A started mailer process with its log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, needle: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {needle!r} yet:\n{self.text()[-4000:]}")
            time.sleep(0.1)

    def children(self) -> list[int]:
        """Pids of the processes this one started (the worker processes of `mailer worker`)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(stat[1]) == self.popen.pid:
                found.append(int(proc.name))
        return sorted(found)

    def kill_group(self) -> None:
        """SIGKILL the process and everything it started."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_group()


class Deployment:
    """mailer CLI processes against one database, broker namespace and SMTP server."""

    def __init__(self, tmp: Path, database_url: str, broker_url: str, smtp_url: str, **env: str):
        self.tmp = tmp
        self.database_url = database_url
        self.namespace = f"mailer-proc-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        self.env.update(
            MAILER_DATABASE_URL=database_url,
            MAILER_BROKER_URL=broker_url,
            MAILER_BROKER_NAMESPACE=self.namespace,
            MAILER_SMTP_URL=smtp_url + "?timeout_s=5",
            MAILER_SMTP_POOL_SIZE="2",
            MAILER_SECRET_KEY=TEST_SECRET,
            MAILER_TEMPLATES_DIR=str(ROOT / "templates"),
            MAILER_AUDIENCES_DIR=str(ROOT / "audiences"),
            MAILER_PUBLIC_BASE_URL="https://mail.cpi.example",
            MAILER_VAR_DIR=str(tmp / "var"),
            MAILER_USER="ops",
            MAILER_BATCH_SIZE="50",
            MAILER_RECORD_EVERY="10",
            MAILER_RETRY_DELAYS_S="1",
            MAILER_SCHEDULER_INTERVAL_S="0.5",
            PYTHONPATH=str(ROOT),
        )
        self.env.update(env)
        self.procs: list[Proc] = []
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_pre_ping=True)
        return self._engine

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a mailer command to its end; the caller checks the result."""
        return subprocess.run(
            [*MAILER, *args],
            env=self.env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def mailer(self, *args: str) -> str:
        """Run a mailer command that must succeed; its standard output."""
        done = self.run(*args)
        assert done.returncode == 0, f"mailer {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, *args: str, ready: str = "ready") -> Proc:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        popen = subprocess.Popen(
            [*MAILER, *args],
            env=self.env,
            cwd=self.tmp,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        proc.wait_for(ready)
        return proc

    def seed(self, recipients: int) -> None:
        self.mailer("db", "upgrade")
        self.mailer(
            "users", "create", "ops", "--role", "admin", "--name", "Ops",
            "--email", "ops@cpi.example",
        )  # fmt: skip
        self.mailer(
            "sample-data",
            "--organizations",
            str(recipients),
            "--seed",
            "5",
            "--into-db",
            "--contacts-per-org",
            "1-1",
        )
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE contacts SET status = 'active'"))

    def campaign(self, category: str) -> int:
        template = TEMPLATES[category]
        out = self.mailer(
            "campaign", "create", "--name", f"{category} run", "--category", category,
            "--template", template, "--json",
        )  # fmt: skip
        import json

        return int(json.loads(out)["id"])

    def launch(self, campaign_id: int) -> None:
        self.mailer("campaign", "launch", str(campaign_id), "--no-wait")

    def status(self, campaign_id: int) -> str:
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    text("SELECT status FROM campaigns WHERE id = :i"), {"i": campaign_id}
                ).scalar()
            )

    def counts(self, campaign_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM sends WHERE campaign_id = :i GROUP BY status"),
                {"i": campaign_id},
            )
            return {status: int(n) for status, n in rows}

    def emails(self, campaign_id: int, status: str | None = None) -> set[str]:
        query = "SELECT email FROM sends WHERE campaign_id = :i"
        if status:
            query += " AND status = :s"
        with self.engine.connect() as conn:
            return set(conn.execute(text(query), {"i": campaign_id, "s": status}).scalars())

    def wait_done(self, campaign_id: int, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while self.status(campaign_id) in ("sending", "scheduled"):
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.log.name}\n{p.text()[-3000:]}" for p in self.procs)
                raise AssertionError(f"not done: {self.counts(campaign_id)}\n{logs}")
            time.sleep(0.2)

    def wait_sent(self, campaign_id: int, at_least: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.counts(campaign_id).get("sent", 0) < at_least:
            assert time.monotonic() < deadline, self.counts(campaign_id)
            time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(p.text() for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self._engine is not None:
            self._engine.dispose()


def received(server: FaultServer) -> Counter[str]:
    return Counter(r for m in list(server.messages) for r in m.rcpt_tos)


@contextmanager
def shared_database() -> Iterator[str]:
    """A new database on the shared PostgreSQL server, dropped afterwards."""
    name = f"mailer_proc_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{SHARED_PG}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{SHARED_PG}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may stop and restart."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [redis_server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb as user postgres) on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        # its own directory under the system temp dir: pytest's is private to root, and the
        # server runs as postgres
        self.dir = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
        self.bin = _pg_bin()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            "pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"),
            "-w", "start",
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop at once and delete the cluster."""
        with suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("initdb not found under /usr/lib/postgresql/*/bin")
    return found[-1].parent


def _wait_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
