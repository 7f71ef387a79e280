"""Serving the web app under uvicorn with safe settings: `uvicorn_config` (used by
`mailer serve`) and `HeaderTimeoutH11Protocol`.

uvicorn bounds the time a kept-alive connection may sit idle, but not the time a client may
take to send its request headers: one that trickles a header line every few seconds holds a
connection for as long as it likes (slowloris). `HeaderTimeoutH11Protocol` closes any
connection whose request line and headers are not complete within `header_timeout_s` of the
connection opening or of the previous response. For `uvicorn mailer.web:app` directly:

    uvicorn --http mailer.web.server:HeaderTimeoutH11Protocol --no-proxy-headers \\
        --no-access-log --no-server-header mailer.web:app
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mailer.config import Settings


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that are slow to send their headers."""

    #: Seconds a client has to send a request's line and headers.
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE and self._header_timer is not None:
            self._header_timer.cancel()  # the headers are in; the app's limits take over
            self._header_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request on this connection gets as long

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration `mailer serve` runs `app` with.

    proxy_headers off: uvicorn would otherwise trust X-Forwarded-For from 127.0.0.1; whether
    to trust a proxy is MAILER_TRUSTED_PROXY's decision (mailer.web.security.client_ip).
    access_log off: every public URL carries a recipient token, which would let whoever reads
    the log unsubscribe that person; consent changes are in the audit log instead.
    """
    protocol = type(
        "HeaderTimeoutH11Protocol",
        (HeaderTimeoutH11Protocol,),
        {"header_timeout_s": settings.web_header_timeout_s},
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        h11_max_incomplete_event_size=16 * 1024,
    )
