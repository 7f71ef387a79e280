"""One worker process of `mailer worker`: Dramatiq worker threads, a heartbeat, a clean stop.

Run by `workers.supervisor`, which replaces the process if it dies:
    python -m workers.process --threads 2 [--ready-fd N]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading

import dramatiq

# the delivery engine, loaded now rather than on the first batch (mailer.delivery imports it
# on first use): a batch enqueued into idle workers must not wait for it
import mailer.delivery.deliver  # noqa: F401
from mailer.config import Settings
from mailer.delivery.heartbeats import WORKER_BEAT_S, beat
from mailer.models import utcnow
from mailer.upkeep import watch_scheduler
from workers.actors import Wiring, setup
from workers.broker import queue_names

_log = logging.getLogger("mailer.worker")
#: How often a waiting consumer or worker thread looks whether to stop (ms). Consumers fetch
#: when nudged, and otherwise every workers.broker.NUDGED_POLL_MS, not this often.
IDLE_POLL_MS = 100


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="workers.process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ready-fd", type=int, default=-1)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s [worker {os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    wiring = setup(Settings.from_env())
    wiring.prepare()
    wiring.broker.emit_after("process_boot")
    # what the process imported and built at start lives as long as it does: out of every
    # collection (a full one scanning it held the first batch 0.05-0.14 s, §7, and walked it
    # every few thousand messages, §10); the garbage start-up left (compiling the notice makes
    # some) is collected first, not kept for good
    gc.collect()
    gc.freeze()
    worker = dramatiq.Worker(
        wiring.broker,
        queues=set(queue_names(wiring.settings)),
        worker_threads=args.threads,
        worker_timeout=IDLE_POLL_MS,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    heart = threading.Thread(
        target=_beat_until, args=(wiring, args.threads, stop), name="heartbeat", daemon=True
    )
    heart.start()
    if args.ready_fd >= 0:
        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
    stop.wait()
    _log.info("stopping: finishing the batches in hand")
    worker.stop()
    wiring.broker.close()


#: Every this many heartbeats a worker checks that some scheduler still sweeps (mailer.upkeep).
_WATCH_EVERY = 6


def _beat_until(wiring: Wiring, threads: int, stop: threading.Event) -> None:
    started = utcnow()
    details = {"threads": threads, "queues": list(queue_names(wiring.settings))}
    failing = False
    beats = 0
    while not stop.is_set():
        beats += 1
        if beats % _WATCH_EVERY == 0:
            watch_scheduler(wiring.runtime, started, utcnow())
        try:
            beat(wiring.runtime, "worker", details, started_at=started)
            if failing:
                _log.warning("heartbeat recorded again")
            failing = False
        except Exception as exc:
            if not failing:
                _log.warning("cannot record heartbeat (%s); will keep trying", exc)
            failing = True
        stop.wait(WORKER_BEAT_S)


if __name__ == "__main__":
    main()
