"""Getting a launched campaign's batches to workers from the web app.

With a Redis broker the batches are enqueued for `mailer worker` processes; with the embedded
`memory://` broker, worker threads start in this process on the first launch and stop with
the app. Nothing starts until a campaign is launched, so the public pages never need a broker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from mailer.delivery import Batch
from mailer.runtime import Runtime


class WebDispatcher:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._target: Any = None
        self._closers: list[Any] = []
        self._lock = threading.Lock()

    def _start(self) -> Any:
        settings = self.rt.settings
        if not settings.broker_url.startswith("memory://"):
            from workers.actors import setup

            return setup(settings, self.rt)
        from mailer.transports import CaptureServer
        from workers.embedded import EmbeddedWorkers

        if settings.smtp_url.startswith("capture://"):
            capture = CaptureServer(settings)
            capture.start()
            self._closers.append(capture.stop)
        embedded = EmbeddedWorkers(settings, self.rt).__enter__()
        self._closers.append(lambda: embedded.__exit__(None, None, None))
        return embedded

    def dispatch(self, batches: Sequence[Batch]) -> None:
        with self._lock:
            if self._target is None:
                self._target = self._start()
        self._target.dispatch(batches)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()
