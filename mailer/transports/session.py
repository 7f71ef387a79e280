"""An SMTP session on an asyncio protocol: connect, greet, EHLO, STARTTLS, AUTH, read replies,
QUIT.

What the server sends lands in the session's own buffer (`_inbox`) from the protocol's
callback; a reply is taken from it without waiting when it is there (`reply_now`), or awaited
(`_read_reply`). The pipelining client (pipelining.py) builds its transactions on this, and
drives most of them from the callback itself (`_on_data`), with no coroutine per message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from typing import Self

from mailer.errors import TransientSendError
from mailer.transports.base import SendObserver
from mailer.transports.relays import Relay

#: Seconds allowed for QUIT before the socket is simply closed.
QUIT_TIMEOUT_S = 2.0
#: The longest reply line we wait for the end of; a server sending more without a line end
#: is not speaking SMTP (RFC 5321 §4.5.3.1.5 allows 512 octets).
MAX_REPLY_LINE = 1 << 16


class SmtpProtocolError(Exception):
    """The server said something that is not an SMTP reply."""


#: What a lost, cut or garbled connection raises while we read or write.
CONNECTION_ERRORS = (OSError, EOFError, TimeoutError, SmtpProtocolError)


class SmtpSession:
    """One SMTP session; `open()` connects, greets, upgrades to TLS and logs in."""

    def __init__(self, relay: Relay, local_hostname: str) -> None:
        self.relay = relay
        self.sent_count = 0
        self.observer: SendObserver | None = None
        self.is_open = False
        self.extensions: dict[str, str] = {}
        self._local_hostname = local_hostname
        self._transport: asyncio.Transport | None = None
        self._wire = _Wire(self)
        #: What the server sent that no reply has taken yet: everything that arrived, whole
        #: replies or not; the replies to a pipelined transaction usually arrive together
        #: (`reply_now`).
        self._inbox = bytearray()
        #: Why no more will arrive (None while the connection is up): the server closed it
        #: (IncompleteReadError) or it broke (the OSError).
        self._end: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None  #: a `_read_line` waiting for data
        self._pending: list[bytes] = []  #: commands not yet written (no PIPELINING)
        #: The loop time by which the transaction under way must be answered (`expect_by`).
        self._due = math.inf
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.has_timed_out = False

    @property
    def is_pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    @classmethod
    async def open(cls, relay: Relay, local_hostname: str) -> Self:
        """A ready session, or TransientSendError saying why there is none."""
        conn = cls(relay, local_hostname)
        try:
            async with asyncio.timeout(relay.timeout_s):
                await conn._establish()
        except CONNECTION_ERRORS as exc:
            conn.abort()
            raise TransientSendError(f"cannot connect to {relay.address}: {describe(exc)}") from exc
        except TransientSendError:
            conn.abort()
            raise
        conn.is_open = True
        return conn

    async def _establish(self) -> None:
        relay = self.relay
        self._loop = asyncio.get_running_loop()
        context = relay.tls_context() if relay.is_implicit_tls else None
        self._transport, _ = await self._loop.create_connection(
            lambda: self._wire,
            relay.host,
            relay.port,
            ssl=context,
            server_hostname=relay.host if context else None,
        )
        self._expect(await self._read_reply(), 220, "greeting")
        await self._ehlo()
        if not relay.is_implicit_tls and relay.starttls is not False:
            if "STARTTLS" in self.extensions:
                self._write(b"STARTTLS\r\n")
                self._expect(await self._read_reply(), 220, "STARTTLS")
                if self._inbox:  # it would be read as if it had come over TLS
                    raise SmtpProtocolError(
                        f"the server sent {bytes(self._inbox[:80])!r} after its STARTTLS reply, "
                        "before TLS began (a response injection)"
                    )
                upgraded = await self._loop.start_tls(
                    self._transport,
                    self._wire,
                    relay.tls_context(is_opportunistic=relay.starttls is None),
                    server_hostname=relay.host,
                )
                if upgraded is None:  # the connection closed during the handshake
                    raise self._end or asyncio.IncompleteReadError(b"", None)
                self._transport = upgraded
                await self._ehlo()
            elif relay.starttls:
                raise TransientSendError(
                    f"{relay.address} does not offer STARTTLS, which MAILER_SMTP_URL asks for "
                    "(starttls=1); drop starttls=1 or fix the server"
                )
        if relay.has_credentials:
            await self._login()

    def _write(self, data: bytes) -> None:
        assert self._transport is not None, "a write on a session never opened"
        self._transport.write(data)

    async def _ehlo(self) -> None:
        self._write(b"EHLO " + self._local_hostname.encode("ascii") + b"\r\n")
        code, text = await self._read_reply()
        self._expect((code, text), 250, "EHLO")
        self.extensions = {}
        for line in text.split("\n")[1:]:
            name, _, value = line.partition(" ")
            self.extensions[name.upper()] = value

    async def _login(self) -> None:
        relay = self.relay
        methods = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in methods:
            token = f"\0{relay.username}\0{relay.password}".encode()
            self._write(b"AUTH PLAIN " + base64.b64encode(token) + b"\r\n")
        elif "LOGIN" in methods:
            self._write(b"AUTH LOGIN\r\n")
            self._expect(await self._read_reply(), 334, "AUTH LOGIN")
            self._write(base64.b64encode(relay.username.encode()) + b"\r\n")
            self._expect(await self._read_reply(), 334, "AUTH LOGIN user name")
            self._write(base64.b64encode(relay.password.encode()) + b"\r\n")
        else:
            raise TransientSendError(
                f"{relay.address} offers no AUTH PLAIN or LOGIN (offers {methods or 'none'}); "
                "remove the user name from MAILER_SMTP_URL or enable STARTTLS"
            )
        code, text = await self._read_reply()
        if code != 235:
            raise TransientSendError(
                f"{relay.address} refused our login as {relay.username!r}: {code} {text}; "
                "check the user name and password in MAILER_SMTP_URL",
                code=code,
                reply=text,
            )

    def expect_by(self, *, is_new: bool = True) -> None:
        """The replies now awaited are due within the relay's timeout; past it the session is
        cut (`has_timed_out`), and the read waiting for them fails. With `is_new` False, a
        deadline already running stands: the transaction began earlier (handed from the
        driven path to the awaited one, pipelining.py) and has no more time for that.

        One timer per session, moved only when it fires: `asyncio.timeout()` around every
        message schedules and cancels a timer each time (~3.5 µs, docs/performance.md §10).
        """
        loop = self._loop
        assert loop is not None, "expect_by() on a session never opened"
        if not is_new and self._due != math.inf:
            return
        self._due = loop.time() + self.relay.timeout_s
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._due, self._check_due)

    def answered(self) -> None:
        """Nothing is awaited any more (until the next `expect_by`)."""
        self._due = math.inf

    def _check_due(self) -> None:
        self._watchdog = None
        if self._due == math.inf or not self.is_open or self._loop is None:
            return
        if self._loop.time() < self._due:
            self._watchdog = self._loop.call_at(self._due, self._check_due)
            return
        # cut the socket but leave the session to what waits on it: the end reaches it at once
        self.has_timed_out = True
        self.is_open = False
        if self._transport is not None:
            self._transport.abort()

    def describe(self, exc: BaseException) -> str:
        """What went wrong, for a reply: a cut by the watchdog is a time-out."""
        return "timed out" if self.has_timed_out else describe(exc)

    def _expect(self, reply: tuple[int, str], code: int, step: str) -> None:
        if reply[0] != code:
            raise TransientSendError(
                f"{self.relay.address} answered {step} with {reply[0]} {reply[1]}",
                code=reply[0],
                reply=reply[1],
            )

    def reply_now(self) -> tuple[int, str] | None:
        """The next reply, of one line or several, if it has arrived whole (taken out of the
        buffer), without waiting; else None, and nothing is taken (`_read_reply` then waits
        for it). SmtpProtocolError if it is not a reply. Most replies to a pipelined
        transaction are taken this way: no coroutine per reply (docs/performance.md §11)."""
        inbox = self._inbox
        end = inbox.find(b"\n")
        if end < 0:
            return None
        if inbox[3:4] != b"-":
            return _parsed(self._take_line(end))
        count = 1
        while inbox[end + 4 : end + 5] == b"-":  # the line after `end` continues the reply
            end = inbox.find(b"\n", end + 1)
            if end < 0:
                return None
            count += 1
        end = inbox.find(b"\n", end + 1)
        if end < 0:
            return None
        lines = [self._take_line(inbox.find(b"\n")) for _ in range(count + 1)]
        return _code(lines[-1]), "\n".join(_parsed(x)[1] for x in lines)

    async def _read_reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply: its code and its text, lines joined by newlines."""
        line = await self._read_line()
        if line[3:4] != b"-":
            return _parsed(line)
        lines = [line]
        while line[3:4] == b"-":
            line = await self._read_line()
            lines.append(line)
        return _code(lines[-1]), "\n".join(_parsed(x)[1] for x in lines)

    async def _read_line(self) -> bytes:
        """The next line the server sends, its LF included, waiting for it as long as it
        takes (the watchdog cuts a session that waits too long)."""
        inbox = self._inbox
        while (end := inbox.find(b"\n")) < 0:
            self._check_reply_length()
            if self._end is not None:
                raise self._end
            assert self._loop is not None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._take_line(end)

    def _check_reply_length(self) -> None:
        """Call when the buffer holds no whole reply: SmtpProtocolError once it is too long to
        become one (a line, or a reply of several, over MAX_REPLY_LINE)."""
        if len(self._inbox) > MAX_REPLY_LINE:
            raise SmtpProtocolError(
                f"no line end in {len(self._inbox)} bytes from the server: "
                f"{bytes(self._inbox[:80])!r}"
            )

    def _on_data(self) -> None:
        """Something arrived in `_inbox` (or the connection ended): wake the waiting read."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _received(self, data: bytes) -> None:
        self._inbox += data
        self._on_data()

    def _ended(self, exc: BaseException | None) -> None:
        if self._end is None:
            self._end = exc or asyncio.IncompleteReadError(bytes(self._inbox), None)
        self._on_data()

    def _take_line(self, end: int) -> bytes:
        """The buffered line ending at `end` (its LF), taken out of the buffer."""
        line = bytes(self._inbox[: end + 1])
        del self._inbox[: end + 1]
        return line

    async def is_alive(self) -> bool:
        """NOOP answered with 250; closes the session when it was not."""
        if self._transport is None or not self.is_open:
            return False
        try:
            async with asyncio.timeout(min(self.relay.timeout_s, QUIT_TIMEOUT_S)):
                self._write(b"NOOP\r\n")
                if (await self._read_reply())[0] == 250:
                    return True
        except CONNECTION_ERRORS:
            pass
        self.abort()
        return False

    async def quit(self) -> None:
        """Say goodbye; never raises."""
        if self._transport is not None and self.is_open:
            try:
                async with asyncio.timeout(QUIT_TIMEOUT_S):
                    self._write(b"QUIT\r\n")
                    await self._read_reply()
            except CONNECTION_ERRORS:
                pass
        self.abort()

    def abort(self) -> None:
        """Close the socket now, without a word to the server."""
        self.is_open = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):  # its event loop is already closed
                self._transport.abort()
            self._transport = None
        self._inbox.clear()


class _Wire(asyncio.Protocol):
    """The connection's protocol: hands what arrives, and the end, to its session."""

    def __init__(self, session: SmtpSession) -> None:
        self._session = session

    def data_received(self, data: bytes) -> None:
        self._session._received(data)

    def eof_received(self) -> bool:
        self._session._ended(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._ended(exc)


def _parsed(line: bytes) -> tuple[int, str]:
    """A reply line's code and text (SmtpProtocolError if it is not one)."""
    return _code(line), line[4:].rstrip().decode("utf-8", "replace")


def _code(line: bytes) -> int:
    if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
        raise SmtpProtocolError(f"not an SMTP reply: {line[:80]!r}")
    return int(line[:3])


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__
