"""Processes the bench scripts start the way an operator would (scripts/bench, bench-policy)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: How long `mailer worker` may take to say every process is ready (a slow machine, cold caches).
WORKER_BOOT_S = 60.0
#: After the ready line: time for the threads to take their first look at the queues.
WORKER_SETTLE_S = 0.5
#: How long `mailer worker` may take to stop after SIGTERM once the run is over.
WORKER_STOP_S = 30.0

#: Each worker group's log (its standard error), kept until it stops cleanly.
_LOGS: dict[int, Path] = {}


def start_workers(
    env: dict[str, str], cwd: Path, processes: int, threads: int
) -> subprocess.Popen[bytes]:
    """`mailer worker -p P -t T` in a session of its own (kill the group to stop it), booted:
    back once it has said every process is ready, so its start-up is not timed with the run
    (nor competes with the command that starts the run)."""
    fd, log = tempfile.mkstemp(prefix="mailer-bench-workers-", suffix=".log")
    with os.fdopen(fd, "wb") as output:
        workers = subprocess.Popen(
            ["mailer", "worker", "--processes", str(processes), "--threads", str(threads)],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    _LOGS[workers.pid] = Path(log)
    _wait_ready(workers, Path(log))
    time.sleep(WORKER_SETTLE_S)
    return workers


def _wait_ready(workers: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WORKER_BOOT_S
    while b"mailer worker ready" not in log.read_bytes():
        if workers.poll() is not None:
            with contextlib.suppress(ProcessLookupError):  # a process it started may be left
                os.killpg(workers.pid, signal.SIGKILL)
            what = f"exited with status {workers.returncode} before it was ready"
        elif time.monotonic() > deadline:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait()
            what = f"was not ready within {WORKER_BOOT_S:.0f} s and was killed"
        else:
            time.sleep(0.1)
            continue
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(f"`mailer worker` {what}; the end of its log ({log}):\n{tail}")


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
