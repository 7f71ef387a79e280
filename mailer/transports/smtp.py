"""SMTP through aiosmtplib: one command per round trip, for servers without PIPELINING.

`MAILER_SMTP_CLIENT=aiosmtplib` forces it. Replies are judged by `base.result_from_reply`,
exactly as the pipelining client judges them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import aiosmtplib

from mailer.errors import TransientSendError
from mailer.outgoing import DeliveryResult, OutgoingMessage
from mailer.transports.base import (
    SendObserver,
    asks_8bitmime,
    connection_result,
    envelope_problem,
    lost_result,
    needs_smtputf8,
    result_from_reply,
    unsupported_result,
)
from mailer.transports.relays import Relay

#: Seconds allowed for QUIT before the socket is simply closed.
QUIT_TIMEOUT_S = 2.0

_CONNECTION_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    OSError,
    TimeoutError,
)


class AiosmtplibConnection:
    """One aiosmtplib session, opened with TLS and login as the relay asks."""

    def __init__(self, relay: Relay, client: aiosmtplib.SMTP) -> None:
        self.relay = relay
        self.sent_count = 0
        self.observer: SendObserver | None = None
        self._client = client

    @property
    def is_open(self) -> bool:
        return self._client.is_connected

    @classmethod
    async def open(cls, relay: Relay, local_hostname: str) -> AiosmtplibConnection:
        """A ready session, or TransientSendError saying why there is none."""
        if relay.is_implicit_tls:
            context = relay.tls_context()
        else:
            context = relay.tls_context(is_opportunistic=relay.starttls is None)
        client = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            local_hostname=local_hostname,
            timeout=relay.timeout_s,
            use_tls=relay.is_implicit_tls,
            start_tls=relay.starttls,
            tls_context=context,
            username=relay.username or None,
            password=relay.password or None,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise TransientSendError(
                f"{relay.address} refused our login as {relay.username!r}: {exc.code} "
                f"{exc.message}; check the user name and password in MAILER_SMTP_URL",
                code=exc.code,
                reply=exc.message,
            ) from exc
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS) as exc:
            client.close()
            raise TransientSendError(f"cannot connect to {relay.address}: {exc}") from exc
        return cls(relay, client)

    async def send_from(
        self,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
        budget: int,
    ) -> None:
        """Send messages one by one from the left of `waiting`; see pool.Connection."""
        while waiting and budget > 0 and self.is_open:
            index, message = waiting.popleft()
            budget -= 1
            results[index] = await self.send(message)

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        """Send one message; any trouble becomes its result. A 421 or a drop closes us."""
        client = self._client
        problem = envelope_problem(message.send_id, message)
        if problem is not None:
            return problem
        is_utf8 = needs_smtputf8(message)
        if is_utf8 and not client.supports_extension("smtputf8"):
            return unsupported_result(message.send_id)
        if is_utf8:
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        elif asks_8bitmime(message, client.supports_extension("8bitmime")):
            options = ["BODY=8BITMIME"]
        else:
            options = []
        encoding = "utf-8" if is_utf8 else "ascii"
        self.sent_count += 1
        stage = "mail"
        try:
            await client.mail(message.mail_from, options=options, encoding=encoding)
            stage = "rcpt"
            await client.rcpt(message.rcpt, encoding=encoding)
            stage = "data"
            if self.observer is not None:
                self.observer.attempting(message.send_id)
            reply = await client.data(message.data)
        except aiosmtplib.SMTPResponseException as exc:
            result = result_from_reply(
                message.send_id, exc.code, exc.message, is_sender=stage == "mail"
            )
            await self._reset()
            return result
        except _CONNECTION_ERRORS as exc:
            client.close()
            if stage == "data":
                # aiosmtplib writes the content once DATA is answered, inside one call: past
                # DATA, it may have gone out and been accepted
                return lost_result(
                    message.send_id,
                    f"no reply from {self.relay.address} after DATA: {exc}; the message may "
                    "have been delivered",
                )
            return connection_result(
                message.send_id, f"connection to {self.relay.address} lost: {exc}"
            )
        return result_from_reply(message.send_id, reply.code, reply.message)

    async def _reset(self) -> None:
        # After a refusal the transaction must be reset; aiosmtplib already closed on a 421.
        if not self._client.is_connected:
            return
        try:
            await self._client.rset()
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS):
            self._client.close()

    async def is_alive(self) -> bool:
        """NOOP answered with 250; closes the session when it was not."""
        if not self.is_open:
            return False
        try:
            async with asyncio.timeout(QUIT_TIMEOUT_S):
                await self._client.noop()
                return True
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS):
            self.abort()
            return False

    async def quit(self) -> None:
        """Say goodbye; never raises."""
        try:
            async with asyncio.timeout(QUIT_TIMEOUT_S):
                await self._client.quit()
        except (aiosmtplib.SMTPException, *_CONNECTION_ERRORS):
            pass
        self._client.close()

    def abort(self) -> None:
        """Close the socket now, without a word to the server."""
        with contextlib.suppress(RuntimeError):  # its event loop is already closed
            self._client.close()
