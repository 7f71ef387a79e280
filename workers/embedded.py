"""Worker threads inside the current process: the embedded default (`memory://`) and tests.

The same actors and core code as separate `mailer worker` processes; only the broker differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import dramatiq
from sqlalchemy import select

from mailer.campaigns import CampaignSummary, campaign_status
from mailer.config import Settings
from mailer.delivery import Batch, scheduler_tick
from mailer.enums import CampaignStatus
from mailer.models import Campaign
from mailer.runtime import Runtime
from workers.actors import Wiring, setup

#: Campaign states in which there is still work for the workers.
ACTIVE = (CampaignStatus.SENDING, CampaignStatus.SCHEDULED)


class EmbeddedWorkers:
    def __init__(self, settings: Settings, runtime: Runtime, *, threads: int = 2) -> None:
        self.runtime = runtime
        self.wiring: Wiring = setup(settings, runtime)
        self.worker = dramatiq.Worker(
            self.wiring.broker, worker_threads=threads, worker_timeout=100
        )

    def __enter__(self) -> EmbeddedWorkers:
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()

    def dispatch(self, batches: Sequence[Batch]) -> None:
        self.wiring.dispatch(batches)

    def tick(self) -> None:
        scheduler_tick(self.runtime, dispatch=self.dispatch)

    def run_until_finished(
        self,
        campaign_ids: Iterable[int],
        *,
        timeout_s: float = 600.0,
        tick_s: float = 0.5,
        on_progress: Callable[[list[CampaignSummary]], None] | None = None,
    ) -> bool:
        """Sweep and wait until none of the campaigns is sending or scheduled; False on timeout."""
        ids = list(campaign_ids)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.tick()
            if on_progress is not None:
                on_progress([campaign_status(self.runtime, i) for i in ids])
            with self.runtime.sessions() as session:
                states = set(session.scalars(select(Campaign.status).where(Campaign.id.in_(ids))))
            if not states & {s.value for s in ACTIVE}:
                return True
            time.sleep(tick_s)
        return False
