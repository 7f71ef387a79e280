"""Processes the bench scripts start the way an operator would (scripts/bench, bench-policy)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

#: Time for the worker processes to boot and connect to the broker before a run is timed.
WORKER_BOOT_S = 3.0


def start_workers(
    env: dict[str, str], cwd: Path, processes: int, threads: int
) -> subprocess.Popen[bytes]:
    """`mailer worker -p P -t T` in a session of its own (kill the group to stop it), booted."""
    workers = subprocess.Popen(
        ["mailer", "worker", "--processes", str(processes), "--threads", str(threads)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(WORKER_BOOT_S)
    return workers


def stop_workers(workers: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole worker group (`mailer worker` and its processes) and wait for it."""
    os.killpg(workers.pid, signal.SIGTERM)
    workers.wait(30)
