"""`mailer worker`: start N worker processes and keep N running.

A worker process that dies (SIGKILL, the OOM killer, a crash) is replaced at once, with a
growing pause if it keeps dying young; the others carry on (Dramatiq's own CLI stops every
process when one dies). SIGTERM or SIGINT stops them all, letting each finish its batches.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

_log = logging.getLogger("mailer.worker")

#: A process that dies younger than this counts as crashing; its restarts slow down.
YOUNG_S = 10.0
#: The longest pause before restarting a process that keeps dying young.
MAX_RESTART_PAUSE_S = 30.0
#: How long a stop waits for worker processes to finish their batches before killing them.
STOP_TIMEOUT_S = 60.0
#: How long to wait for every process to report ready before saying so anyway.
READY_TIMEOUT_S = 60.0


@dataclass
class _Slot:
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0  #: deaths in a row, each younger than YOUNG_S
    restart_at: float = 0.0


class Supervisor:
    def __init__(self, processes: int, threads: int, *, echo: Callable[[str], None]) -> None:
        self.threads = threads
        self.slots = [_Slot() for _ in range(max(1, processes))]
        self.echo = echo
        self._stopping = False

    def run(self, ready_line: str) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        ready_r, ready_w = os.pipe()
        for slot in self.slots:
            self._start(slot, ready_w)
        self._wait_ready(ready_r, len(self.slots))
        os.close(ready_r)
        os.close(ready_w)
        self.echo(ready_line)
        while not self._stopping:
            self._reap()
            time.sleep(0.2)
        return self._stop_all()

    def _start(self, slot: _Slot, ready_fd: int = -1) -> None:
        args = [sys.executable, "-m", "workers.process", "--threads", str(self.threads)]
        pass_fds: tuple[int, ...] = ()
        if ready_fd >= 0:
            args += ["--ready-fd", str(ready_fd)]
            pass_fds = (ready_fd,)
        slot.process = subprocess.Popen(args, pass_fds=pass_fds)
        slot.started = time.monotonic()

    def _wait_ready(self, ready_fd: int, count: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        seen = 0
        while seen < count and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                _log.warning("%d of %d worker processes not ready yet", count - seen, count)
                return
            readable, _, _ = select.select([ready_fd], [], [], min(left, 0.5))
            if readable:
                seen += len(os.read(ready_fd, count))
            self._reap()

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is None:
                if now >= slot.restart_at and not self._stopping:
                    self._start(slot)
                    _log.warning("started worker process %s", slot.process.pid)  # type: ignore[union-attr]
                continue
            code = process.poll()
            if code is None or self._stopping:
                continue
            age = now - slot.started
            slot.crashes = slot.crashes + 1 if age < YOUNG_S else 0
            pause = min(MAX_RESTART_PAUSE_S, 0.5 * 2**slot.crashes) if slot.crashes else 0.0
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            _log.warning(
                "worker process %s died (%s) after %.0f s; replacing it%s",
                process.pid,
                how,
                age,
                f" in {pause:.1f} s" if pause else "",
            )
            slot.process = None
            slot.restart_at = now + pause

    def _stop(self, signum: int, _frame: object) -> None:
        self._stopping = True

    def _stop_all(self) -> int:
        running = [s.process for s in self.slots if s.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.warning("worker process %s did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        return 0
