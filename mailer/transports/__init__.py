"""Transports: how built messages leave mailer.

    transport = make_transport(settings)       # from settings.smtp_url and settings.smtp_client
    await transport.open()
    results = await transport.send_batch(messages)   # one DeliveryResult per message, in order
    await transport.close()

`smtp_client=auto` uses our pipelining client (RFC 2920 when offered, one command at a time
otherwise); `smtp_client=aiosmtplib` forces aiosmtplib. `capture://` sends to the in-process
capture server that `CaptureServer(settings).start()` started.
"""

from __future__ import annotations

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.transports.base import Transport, classify, outcome_for, result_from_reply
from mailer.transports.capture import CaptureServer, capture_url
from mailer.transports.pipelining import PipeliningConnection
from mailer.transports.pool import Connection, PooledTransport
from mailer.transports.relays import Relay, parse_relays
from mailer.transports.smtp import AiosmtplibConnection

__all__ = [
    "CaptureServer",
    "PooledTransport",
    "Relay",
    "Transport",
    "classify",
    "make_transport",
    "outcome_for",
    "parse_relays",
    "result_from_reply",
]

#: The client behind each MAILER_SMTP_CLIENT value.
_CLIENTS: dict[str, type[PipeliningConnection] | type[AiosmtplibConnection]] = {
    "auto": PipeliningConnection,
    "pipelining": PipeliningConnection,
    "aiosmtplib": AiosmtplibConnection,
}


def make_transport(settings: Settings, url: str | None = None) -> PooledTransport:
    """The transport for `url` (default `settings.smtp_url`), with the client of `smtp_client`."""
    url = (url or settings.smtp_url).strip()
    if url.startswith("capture://"):
        url = capture_url(settings)
    relays = parse_relays(url, default_timeout_s=settings.smtp_timeout_s)
    client = _CLIENTS.get(settings.smtp_client.strip().lower())
    if client is None:
        raise ConfigError(
            f"MAILER_SMTP_CLIENT={settings.smtp_client!r} is unknown; "
            "use auto (pipelining when offered) or aiosmtplib"
        )
    local_hostname = settings.smtp_local_hostname.strip()
    if not local_hostname or not local_hostname.isascii() or " " in local_hostname:
        raise ConfigError(
            f"MAILER_SMTP_LOCAL_HOSTNAME={settings.smtp_local_hostname!r} cannot go into EHLO; "
            "use this host's ASCII domain name, e.g. mailer.cpi.example"
        )

    async def connect(relay: Relay) -> Connection:
        return await client.open(relay, local_hostname)

    return PooledTransport(relays, settings, connect)
