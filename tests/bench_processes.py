"""Processes the bench scripts start the way an operator would (scripts/bench, bench-policy)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Time for the worker processes to boot and connect to the broker before a run is timed.
WORKER_BOOT_S = 3.0
#: How long `mailer worker` may take to stop after SIGTERM once the run is over.
WORKER_STOP_S = 30.0

#: Each worker group's log (its standard error), kept until it stops cleanly.
_LOGS: dict[int, Path] = {}


def start_workers(
    env: dict[str, str], cwd: Path, processes: int, threads: int
) -> subprocess.Popen[bytes]:
    """`mailer worker -p P -t T` in a session of its own (kill the group to stop it), booted."""
    fd, log = tempfile.mkstemp(prefix="mailer-bench-workers-", suffix=".log")
    with os.fdopen(fd, "wb") as stderr:
        workers = subprocess.Popen(
            ["mailer", "worker", "--processes", str(processes), "--threads", str(threads)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    _LOGS[workers.pid] = Path(log)
    time.sleep(WORKER_BOOT_S)
    return workers


def stop_workers(workers: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole worker group (`mailer worker` and its processes) and wait for it; a
    group that does not stop in time is killed, and the run fails with the end of its log."""
    log = _LOGS.pop(workers.pid)
    os.killpg(workers.pid, signal.SIGTERM)
    try:
        workers.wait(WORKER_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(workers.pid, signal.SIGKILL)
        workers.wait()
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(
            f"`mailer worker` did not stop within {WORKER_STOP_S:.0f} s of SIGTERM and was "
            f"killed; the end of its log ({log}):\n{tail}"
        )
    log.unlink()
