"""A pool of persistent SMTP connections in one event loop, shared by both SMTP clients.

Each of `smtp_pool_size` slots keeps one connection open across batches, sends at most
`smtp_max_messages_per_connection` messages on it, then says QUIT and opens a fresh one. A slot
whose relay cannot be reached tries the other relays with a short backoff; when none answers,
every message still waiting in the batch is deferred at once instead of being tried one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from mailer.config import Settings
from mailer.errors import TransientSendError
from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage, ReplyKind
from mailer.transports.base import SendObserver, connection_result
from mailer.transports.relays import Relay

_log = logging.getLogger(__name__)

#: Seconds to wait before each further connection attempt of one slot within one batch.
CONNECT_BACKOFF_S: tuple[float, ...] = (0.05, 0.25, 1.0)
#: Seconds idle after which a kept connection is checked with NOOP before use: servers hang
#: up on idle clients (Postfix after 300 s), and the first message must not pay for that.
IDLE_CHECK_AFTER_S = 1.0


class Connection(Protocol):
    """One open SMTP session, as the pool sees it."""

    relay: Relay
    sent_count: int
    #: Told of each message just before its content goes out, and so may be delivered.
    observer: SendObserver | None

    @property
    def is_open(self) -> bool: ...

    async def send_from(
        self,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
        budget: int,
    ) -> None:
        """Send from the left of `waiting` (setting `results[index]`) until it is empty,
        `budget` messages were begun, or the connection closed."""
        ...

    async def is_alive(self) -> bool:
        """NOOP answered: the server has not hung up on us while we were idle."""
        ...

    async def quit(self) -> None: ...

    def abort(self) -> None: ...


Connector = Callable[[Relay], Awaitable[Connection]]


class PooledTransport:
    """A Transport spreading each batch over up to `pool_size` persistent connections.

    `connect(relay)` opens one connection (or raises TransientSendError); it decides the client.
    """

    def __init__(self, relays: Sequence[Relay], settings: Settings, connect: Connector) -> None:
        self._relays = list(relays)
        self._connect = connect
        self._pool_size = max(1, settings.smtp_pool_size)
        self._max_per_connection = max(1, settings.smtp_max_messages_per_connection)
        self._slots: list[Connection | None] = [None] * self._pool_size
        self._last_used_at = [0.0] * self._pool_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch_lock = asyncio.Lock()
        self._unreachable = ""
        self._observer: SendObserver | None = None

    async def open(self) -> None:
        """Nothing to do up front: connections open on first use and then stay open."""
        self._adopt_running_loop()

    async def send_batch(
        self, messages: Sequence[OutgoingMessage], observer: SendObserver | None = None
    ) -> list[DeliveryResult]:
        """One result per message, in order; never raises for a per-message problem.

        One batch at a time per transport (concurrent calls wait for each other).
        """
        self._adopt_running_loop()
        async with self._batch_lock:
            return await self._send_batch(messages, observer)

    async def _send_batch(
        self, messages: Sequence[OutgoingMessage], observer: SendObserver | None = None
    ) -> list[DeliveryResult]:
        results: list[DeliveryResult | None]
        if observer is None:
            results = [None] * len(messages)
        else:
            results = _ObservedResults(observer, len(messages))
        waiting = deque(enumerate(messages))
        self._observer = observer
        self._unreachable = ""
        workers = min(self._pool_size, len(messages))
        await asyncio.gather(*(self._work(slot, waiting, results) for slot in range(workers)))
        if waiting or None in results:
            await self._finish_orphans(messages, waiting, results)
        return results  # type: ignore[return-value]  # every index is filled now

    async def close(self) -> None:
        """QUIT every open connection (politely, in parallel)."""
        slots, self._slots = self._slots, [None] * self._pool_size
        if self._loop is not asyncio.get_running_loop():
            for conn in slots:
                if conn is not None:
                    conn.abort()
            return
        await asyncio.gather(*(c.quit() for c in slots if c is not None and c.is_open))

    async def __aenter__(self) -> PooledTransport:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _finish_orphans(
        self,
        messages: Sequence[OutgoingMessage],
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
    ) -> None:
        """After a client bug: send what is still waiting, defer what had been taken."""
        if waiting:
            await self._work(0, waiting, results)
        for index, result in enumerate(results):
            if result is None:
                reason = "the SMTP client failed on this message (see the worker log)"
                results[index] = connection_result(messages[index].send_id, reason)

    def _adopt_running_loop(self) -> None:
        # Connections belong to the loop that opened them; a caller that runs each batch in a
        # fresh `asyncio.run()` gets new connections instead of dead ones.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            for conn in self._slots:
                if conn is not None:
                    conn.abort()
            self._slots = [None] * self._pool_size
            self._loop = loop
            self._batch_lock = asyncio.Lock()

    async def _work(
        self,
        slot: int,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
    ) -> None:
        loop = asyncio.get_running_loop()
        conn = self._slots[slot]
        is_idle = loop.time() - self._last_used_at[slot] > IDLE_CHECK_AFTER_S
        if conn is not None and is_idle and not await conn.is_alive():
            conn.abort()
        while waiting:
            conn = self._slots[slot]
            if conn is None or not conn.is_open or conn.sent_count >= self._max_per_connection:
                if conn is not None and conn.is_open:
                    await conn.quit()
                self._slots[slot] = conn = await self._open_slot(slot)
                if conn is None:
                    while waiting:
                        index, message = waiting.popleft()
                        results[index] = connection_result(message.send_id, self._unreachable)
                    return
                if not waiting:  # another slot finished the batch while we connected
                    return
            try:
                conn.observer = self._observer
                await conn.send_from(waiting, results, self._max_per_connection - conn.sent_count)
                self._last_used_at[slot] = loop.time()
            except Exception:
                # A bug, not a reply: keep the batch's other results, drop this connection,
                # and let the messages it held be deferred below rather than lost.
                _log.exception("SMTP client failed on %s", conn.relay.address)
                conn.abort()
                return

    async def _open_slot(self, slot: int) -> Connection | None:
        """A new connection for `slot`, trying each relay in turn; None when none answers."""
        errors: list[str] = []
        loop = asyncio.get_running_loop()
        # A relay that swallows packets costs a whole timeout per attempt: stop trying once
        # one timeout's worth of time has gone, whatever the count.
        deadline = loop.time() + max(relay.timeout_s for relay in self._relays)
        for attempt in range(len(CONNECT_BACKOFF_S) + 1):
            if self._unreachable:
                return None
            relay = self._relays[(slot + attempt) % len(self._relays)]
            try:
                return await self._connect(relay)
            except TransientSendError as exc:
                errors.append(str(exc))
            if attempt == len(CONNECT_BACKOFF_S) or loop.time() >= deadline:
                break
            await asyncio.sleep(CONNECT_BACKOFF_S[attempt])
        self._unreachable = self._unreachable or "; ".join(dict.fromkeys(errors))
        return None


class _ObservedResults(list[DeliveryResult | None]):
    """The batch's results; each is told to the observer the moment it is set, except a
    message lost on the wire: it stays begun and unanswered, as uncertain as it is."""

    def __init__(self, observer: SendObserver, size: int) -> None:
        super().__init__([None] * size)
        self._observer = observer

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value)
        if isinstance(value, DeliveryResult) and value.kind is not ReplyKind.LOST:
            self._observer.answered(value.send_id, value.outcome is Outcome.SENT)
