"""A fault-injecting SMTP server for tests, built on aiosmtpd.

    server = FaultServer(has_pipelining=True).start()      # 127.0.0.1, a free port
    server.on_rcpt("a@x.test", "421 4.7.0 slow down")      # once, then accept
    server.on_rcpt("b@x.test", "550 5.1.1 no such user", times=None)   # always
    server.on_data("c@x.test", DROP)                       # cut the line at end of data
    server.on_data("d@x.test", HANG)                       # never answer: the client times out
    server.on_message(3, "451 4.3.0 try again")            # the 3rd message reaching end of data
    server.refuse_connections(2)                           # the next 2 connections are cut at once
    with server.down(): ...                                # nothing listens: connection refused
    server.down_for(2.0)                                   # refused now, back in 2 s by itself
    server.messages                                        # [ReceivedMessage(mail_from, …)]
    server.stop()

A reply starting with 421 (and DROP) closes the connection, as RFC 5321 §3.8 says a server does.
EHLO advertises PIPELINING only when asked (aiosmtpd reads pipelined commands line by line, so it
copes), SMTPUTF8 when `has_smtputf8`, STARTTLS when given `tls_context`, and speaks TLS from the
first byte (smtps://) when given `implicit_tls_context`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from mailer.transports.capture import free_port

#: A scripted "reply" that closes the connection without answering.
DROP = "DROP"
#: A scripted "reply" that never comes: the server sits silent (the client must time out).
HANG = "HANG"
#: At the end of data: keep the message (it counts as received), then close the connection
#: without answering: the client cannot know it was delivered (RFC 1047).
KEEP_AND_DROP = "KEEP_AND_DROP"


@dataclass
class ReceivedMessage:
    """One message as the server received it (after undoing dot-stuffing)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str] = field(default_factory=list)


class _Script:
    """Replies queued per key; `times=None` repeats the reply forever."""

    def __init__(self) -> None:
        self._queues: dict[Any, deque[tuple[str, int | None]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def add(self, key: Any, replies: tuple[str, ...], times: int | None) -> None:
        with self._lock:
            for reply in replies:
                self._queues[key].append((reply, times))

    def next(self, key: Any) -> str | None:
        with self._lock:
            queue = self._queues.get(key)
            if not queue:
                return None
            reply, times = queue[0]
            if times is not None:
                if times <= 1:
                    queue.popleft()
                else:
                    queue[0] = (reply, times - 1)
            return reply

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()


class _FaultHandler:
    def __init__(self, server: FaultServer) -> None:
        self.fault = server

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.fault.ehlo_names.append(hostname)
        if self.fault.has_pipelining:
            responses.insert(-1, "250-PIPELINING")
        if not self.fault.has_8bitmime:  # aiosmtpd offers it by itself
            responses = [line for line in responses if "8BITMIME" not in line]
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.fault._mail_script.next("*")
        if reply:
            return _reply(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def _maybe_hang(self, reply: str | None) -> None:
        if reply == HANG:
            await asyncio.sleep(3600)  # cancelled when the server stops

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.fault._rcpt_script.next(address.lower())
        await self._maybe_hang(reply)
        if reply:
            return _reply(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: SMTP, session: Any, envelope: Any) -> str:
        reply = self.fault._rset_script.next("*")
        return _reply(server, reply) if reply else "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        fault = self.fault
        with fault._lock:
            fault.data_count += 1
            nth = fault.data_count
        reply = fault._message_script.next(nth)
        for rcpt in envelope.rcpt_tos:
            reply = reply or fault._data_script.next(rcpt.lower())
        await self._maybe_hang(reply)
        if fault.data_delay_s:
            await asyncio.sleep(fault.data_delay_s)
        if reply and reply != KEEP_AND_DROP:
            return _reply(server, reply)
        with fault._lock:
            fault.messages.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=envelope.original_content,
                    mail_options=list(envelope.mail_options),
                )
            )
        if reply == KEEP_AND_DROP:
            return _reply(server, DROP)
        return "250 2.0.0 OK: queued"


def _reply(server: SMTP, reply: str) -> str:
    """Send `reply`; a 421 closes the connection after it, DROP closes without a word."""
    transport: Any = server.transport
    if reply == DROP:
        if transport is not None:
            transport.abort()
        return "421 dropped"  # never reaches the client: the socket is gone
    if reply.startswith("421") and transport is not None:
        server.loop.call_soon(transport.close)  # after the reply is written
    return reply


class _FaultSMTP(SMTP):
    def __init__(self, fault: FaultServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fault = fault

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self._original_transport is not None:  # the STARTTLS upgrade, not a new client
            return
        with self.fault._lock:
            self.fault.connection_count += 1
            refuse = self.fault._refuse_count > 0
            if refuse:
                self.fault._refuse_count -= 1
        if refuse:
            transport.abort()


class _FaultController(Controller):
    def __init__(self, fault: FaultServer, **kwargs: Any) -> None:
        super().__init__(_FaultHandler(fault), **kwargs)
        self.fault = fault

    def factory(self) -> SMTP:
        return _FaultSMTP(self.fault, self.handler, **self.SMTP_kwargs)


class FaultServer:
    """An SMTP server on 127.0.0.1 whose replies a test scripts; see the module docstring."""

    def __init__(
        self,
        *,
        has_pipelining: bool = False,
        has_smtputf8: bool = True,
        has_8bitmime: bool = True,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls_context: ssl.SSLContext | None = None,
        logins: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        port: int = 0,
    ) -> None:
        self.has_pipelining = has_pipelining
        self.has_smtputf8 = has_smtputf8
        self.has_8bitmime = has_8bitmime
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.implicit_tls_context = implicit_tls_context
        self.logins = logins
        self.auth_require_tls = auth_require_tls
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.messages: list[ReceivedMessage] = []
        self.ehlo_names: list[str] = []
        self.connection_count = 0
        self.data_count = 0
        #: Seconds every message waits before its answer after the final dot (a slow relay).
        self.data_delay_s = 0.0
        self._refuse_count = 0
        self._lock = threading.Lock()
        self._mail_script = _Script()
        self._rset_script = _Script()
        self._rcpt_script = _Script()
        self._data_script = _Script()
        self._message_script = _Script()
        self._controller: _FaultController | None = None
        self._control_lock = threading.RLock()
        self._timer: threading.Timer | None = None

    @property
    def url(self) -> str:
        scheme = "smtps" if self.implicit_tls_context is not None else "smtp"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> FaultServer:
        with self._control_lock:
            return self._start()

    def _start(self) -> FaultServer:
        if self._controller is None:
            kwargs: dict[str, Any] = {
                "hostname": self.host,
                "port": self.port,
                "server_hostname": "fault.smtpd.test",
                "enable_SMTPUTF8": self.has_smtputf8,
            }
            if self.tls_context is not None:
                kwargs.update(tls_context=self.tls_context, require_starttls=self.require_starttls)
            if self.implicit_tls_context is not None:
                kwargs["ssl_context"] = self.implicit_tls_context
            if self.logins is not None:
                kwargs.update(
                    authenticator=self._authenticate, auth_require_tls=self.auth_require_tls
                )
            self._controller = _FaultController(self, **kwargs)
            self._controller.start()
            with self._lock:
                self.connection_count -= 1  # the controller's own start-up probe
        return self

    def stop(self) -> None:
        with self._control_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._controller is not None:
                self._controller.stop()
                self._controller = None

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Nothing listens on the port inside the block (connection refused); then it's back."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def down_for(self, seconds: float) -> None:
        """Stop listening now and come back after `seconds`, without blocking the caller."""
        with self._control_lock:
            self.stop()
            self._timer = threading.Timer(seconds, self._come_back)
            self._timer.daemon = True
            self._timer.start()

    def _come_back(self) -> None:
        with self._control_lock:
            if self._timer is not None:  # not stopped for good meanwhile
                self._timer = None
                self._start()

    def on_mail(self, *replies: str, times: int | None = 1) -> None:
        """The next MAIL FROM commands get these replies (each `times` times, None: forever)."""
        self._mail_script.add("*", replies, times)

    def on_rset(self, *replies: str, times: int | None = 1) -> None:
        """The next RSET commands get these replies (DROP cuts the line)."""
        self._rset_script.add("*", replies, times)

    def on_rcpt(self, rcpt: str, *replies: str, times: int | None = 1) -> None:
        """RCPT TO:<rcpt> gets these replies, in turn; then it is accepted."""
        self._rcpt_script.add(rcpt.lower(), replies, times)

    def on_data(self, rcpt: str, *replies: str, times: int | None = 1) -> None:
        """A message to `rcpt` gets these replies at end of data; then it is accepted."""
        self._data_script.add(rcpt.lower(), replies, times)

    def on_message(self, nth: int, reply: str) -> None:
        """The nth message (counting from 1, every end of data since start) gets `reply`."""
        self._message_script.add(nth, (reply,), 1)

    def refuse_connections(self, count: int) -> None:
        """The next `count` connections are cut before the greeting."""
        with self._lock:
            self._refuse_count += count

    def reset(self) -> None:
        """Forget scripts and received messages."""
        for script in (self._mail_script, self._rset_script, self._rcpt_script, self._data_script):
            script.clear()
        self._message_script.clear()
        with self._lock:
            self.messages.clear()
            self._refuse_count = 0

    def received_for(self, rcpt: str) -> list[ReceivedMessage]:
        return [m for m in self.messages if rcpt in m.rcpt_tos]

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.logins is None:
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        return AuthResult(success=self.logins.get(user) == password, handled=False)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
