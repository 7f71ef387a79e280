"""Getting batches to workers from a CLI command: Redis, or worker threads in this process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailer import campaigns
from mailer.campaigns import CampaignSummary
from mailer.delivery import Batch
from mailer.errors import CampaignError
from mailer.runtime import Runtime

if TYPE_CHECKING:
    from rich.progress import Progress

    from mailer.transports import CaptureServer


class Dispatcher:
    """Enqueues on Redis, or runs in-process worker threads for the memory:// broker."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.is_embedded = rt.settings.is_embedded_broker
        self._embedded: Any = None
        self._wiring: Any = None
        self._capture: CaptureServer | None = None

    def __enter__(self) -> Dispatcher:
        # each branch imports what it needs: `mailer policy publish` starts on the clock of
        # its first notice (mailer/cli/__init__.py)
        if self.is_embedded:
            from mailer.transports import CaptureServer
            from workers.embedded import EmbeddedWorkers

            if self.rt.settings.smtp_url.startswith("capture://"):
                # the embedded default delivers into var/maildir through a capture server
                self._capture = CaptureServer(self.rt.settings)
                self._capture.start()
            self._embedded = EmbeddedWorkers(self.rt.settings, self.rt).__enter__()
        else:
            from workers.actors import setup

            self._wiring = setup(self.rt.settings, self.rt)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._embedded is not None:
            self._embedded.__exit__(*exc)
        if self._capture is not None:
            self._capture.stop()

    def dispatch(self, batches: Sequence[Batch]) -> None:
        target = self._embedded or self._wiring
        assert target is not None
        target.dispatch(batches)

    def wait(self, ids: list[int], *, show: bool) -> None:
        if self._embedded is None:
            watch_progress(self.rt, ids)
            return
        with progress_bar(show) as progress:
            task = progress.add_task("sending", total=None)

            def update(summaries: list[CampaignSummary]) -> None:
                total = sum(s.total for s in summaries)
                progress.update(task, total=total, completed=sum(s.done for s in summaries))

            if not self._embedded.run_until_finished(ids, on_progress=update):
                raise CampaignError("campaign did not finish in time; see `mailer campaign status`")


def progress_bar(show: bool) -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn  # only commands that wait

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        disable=not show,
        transient=True,
    )


def watch_progress(rt: Runtime, ids: list[int]) -> None:
    with progress_bar(True) as progress:
        task = progress.add_task("sending", total=None)
        while True:
            summaries = [campaigns.campaign_status(rt, i) for i in ids]
            progress.update(
                task,
                total=sum(s.total for s in summaries),
                completed=sum(s.done for s in summaries),
            )
            if all(s.status not in ("sending", "scheduled") for s in summaries):
                return
            time.sleep(0.5)
