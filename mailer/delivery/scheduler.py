"""The scheduler's loop: sweep every interval, beat, and ride out database and broker outages.

Any error in a sweep (PostgreSQL restarting, Redis down, a bug) is logged; the loop waits a
jittered, growing pause (up to `MAX_PAUSE_S`) and sweeps again. It never exits on its own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mailer.delivery.batches import Batch, Dispatch
from mailer.delivery.heartbeats import beat, forget_old
from mailer.delivery.sweep import TickReport, scheduler_tick
from mailer.models import utcnow
from mailer.runtime import Runtime
from mailer.upkeep import UPKEEP_INTERVAL_S, run_upkeep

_log = logging.getLogger("mailer.scheduler")

#: The longest pause between attempts while something is down.
MAX_PAUSE_S = 30.0


def report_dict(report: TickReport) -> dict[str, Any]:
    """The sweep's findings, for logs, heartbeats and `--json` (without the batch objects)."""
    found = {k: v for k, v in vars(report).items() if k != "batches"}
    found["batches"] = len(report.batches)
    return found


def sweep_once(rt: Runtime, dispatch: Dispatch | None) -> TickReport:
    """One sweep, then the heartbeat that says when it finished and what it found; and, every
    UPKEEP_INTERVAL_S, the upkeep (rates, alerts, daily jobs: mailer.upkeep)."""
    global _last_upkeep
    started = utcnow()
    report = scheduler_tick(rt, dispatch=dispatch, now=started)
    beat(rt, "scheduler", {"last_sweep": report_dict(report)}, started_at=_STARTED_AT)
    if time.monotonic() - _last_upkeep >= UPKEEP_INTERVAL_S:
        _last_upkeep = time.monotonic()
        run_upkeep(rt, started)
    return report


_last_upkeep = -UPKEEP_INTERVAL_S


_STARTED_AT = utcnow()


class _Held:
    """Dispatch that keeps what the broker refused (Redis down) and sends it first next time,
    rather than leaving those rows to wait a lease period for the stale-row sweep."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._held: list[Batch] = []

    def __call__(self, batches: Sequence[Batch]) -> None:
        self._held.extend(batches)
        self.flush()

    def flush(self) -> None:
        if self._held:
            self._dispatch(self._held)  # a batch sent twice costs one empty claim
            self._held.clear()


def run_scheduler(
    rt: Runtime,
    dispatch: Dispatch | None,
    *,
    interval_s: float,
    on_report: Callable[[TickReport], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Sweep every `interval_s` until `stop` is set, whatever goes wrong in between."""
    stop = stop or threading.Event()
    held = _Held(dispatch) if dispatch is not None else None
    failures = 0
    is_ready = False
    sweeps = 0
    while not stop.is_set():
        try:
            if held is not None:
                held.flush()
            report = sweep_once(rt, held)
        except Exception as exc:
            failures += 1
            pause = min(MAX_PAUSE_S, interval_s * 2 ** min(failures, 6)) * random.uniform(0.5, 1)
            _log.warning(
                "sweep failed (%s: %s); next attempt in %.1f s",
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                pause,
                exc_info=failures == 1,
            )
            pause_s = pause
        else:
            if failures:
                _log.warning("sweeping again after %d failed attempts", failures)
            failures = 0
            pause_s = interval_s
            sweeps += 1
            if on_report is not None:
                on_report(report)
            if sweeps % 720 == 1:
                try:
                    forget_old(rt, utcnow())
                except Exception:
                    _log.exception("could not forget old heartbeats")
        if not is_ready:
            is_ready = True
            if on_ready is not None:
                on_ready()
        stop.wait(pause_s)
