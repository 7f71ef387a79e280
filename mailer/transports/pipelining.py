"""Our own small SMTP client: RFC 2920 PIPELINING, one message per transaction.

When the server advertises PIPELINING, each write carries the body of one message followed by
MAIL FROM, RCPT TO and DATA of the next (RFC 2920 §3.1 lets message content open a group), so a
message costs one write and one round trip, where a command-at-a-time client (aiosmtplib) needs
four (docs/performance.md §3, lever 6). Servers without PIPELINING get the same commands one
at a time.

Two ways through a transaction, with the same verdicts:
- **driven** (`_drive`, `_step`): while every envelope is answered 250, 250 and 354 on lines
  of their own, each transaction is advanced from the protocol's callback as its replies
  arrive: no coroutine, future or task per message (docs/performance.md §13);
- **awaited** (`_finish`): everything else (a refusal and the RSET after it, a 421, a
  multi-line or malformed envelope reply, a server without PIPELINING). The driven way hands
  a transaction over before taking any of its envelope replies, so `_finish` reads them all.
Replies are judged by `base.result_from_reply`, exactly as the aiosmtplib transport judges them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from mailer.outgoing import DeliveryResult, OutgoingMessage
from mailer.transports.base import (
    asks_8bitmime,
    connection_result,
    dot_stuff,
    envelope_problem,
    lost_result,
    needs_smtputf8,
    result_from_reply,
    unsupported_result,
)
from mailer.transports.session import CONNECTION_ERRORS, MAX_REPLY_LINE, SmtpSession

_log = logging.getLogger(__name__)

Reply = tuple[int, str]
#: A message taken from the batch: its index in the batch, itself, its envelope commands.
_Item = tuple[int, OutgoingMessage, bytes]

#: The start of each envelope reply, in order, that lets a transaction go on driven.
_ACCEPTED = ((b"250 ",), (b"250 ", b"251 "), (b"354 ",))
_UTF8_PARAMS = b" SMTPUTF8 BODY=8BITMIME"
_8BIT_PARAMS = b" BODY=8BITMIME"
_NO_REPLY: Reply = (0, "")


@dataclass(slots=True)
class _Run:
    """The transactions a `_drive` advances from the protocol's callback."""

    item: _Item  #: the transaction under way
    waiting: deque[tuple[int, OutgoingMessage]]
    results: list[DeliveryResult | None]
    #: Set when driving stops: to the item `_finish` must take over, or None when done.
    done: asyncio.Future[_Item | None]
    is_out: bool = False  #: the item's content went out; its reply is awaited
    follower: _Item | None = None  #: begun with the item's content (its envelope written)


class PipeliningConnection(SmtpSession):
    """An SMTP session that sends batches, pipelined when the server allows."""

    _budget = 0  #: transactions this send_from() may still begin
    _run: _Run | None = None  #: set while `_drive` advances transactions from the callback

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        """Send one message on its own; any trouble becomes its result."""
        results: list[DeliveryResult | None] = [None]
        await self.send_from(deque([(0, message)]), results, budget=1)
        assert results[0] is not None
        return results[0]

    async def send_from(
        self,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
        budget: int,
    ) -> None:
        """Take messages from the left of `waiting` and set `results[index]` for each, until
        `waiting` is empty, `budget` transactions were started, or the connection closed.

        A message whose envelope was written but never answered (the connection closed on
        the message before it) goes back to the front of `waiting` for another connection.
        """
        self._budget = budget
        item = self._start_next(waiting, results)
        while item is not None:
            if self.is_pipelining:
                item = await self._drive(item, waiting, results)
                if item is None:
                    return
            item = await self._finish(item, waiting, results)

    async def _drive(
        self,
        item: _Item,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
    ) -> _Item | None:
        """Advance transactions from the protocol's callback, starting with `item` (its
        envelope written, none of its replies taken), while each goes the usual way.

        Returns None when done, like `_finish`, or the transaction to finish awaited: one whose
        envelope replies are not all 250, 250 and 354 on a line each, or whose connection
        ended before they came. None of its replies is taken yet.
        """
        assert self._loop is not None
        run = _Run(item, waiting, results, self._loop.create_future())
        self._run = run
        try:
            self.expect_by()
            self._step(run)
            return await run.done
        finally:
            self._run = None

    def _on_data(self) -> None:
        """While a run is under way, what arrives advances it (`_step`); otherwise it wakes
        the awaited read, as in every session."""
        run = self._run
        if run is None or run.done.done():
            super()._on_data()
            return
        try:
            self._step(run)
        except Exception as exc:  # a bug: send_from raises it, as `_finish` would
            if not run.done.done():
                run.done.set_exception(exc)

    def _step(self, run: _Run) -> None:
        """Take every reply that has arrived for the run, and write what they let go out."""
        inbox = self._inbox
        while not run.done.done():
            if not run.is_out:
                end = self._envelope_end()
                if end == 0:  # not all three replies are here yet
                    if self._end is not None or len(inbox) > MAX_REPLY_LINE:
                        run.done.set_result(run.item)  # `_finish` says what went wrong
                    return
                if end < 0:  # not the usual answer: `_finish` reads it
                    run.done.set_result(run.item)
                    return
                del inbox[:end]
                self._send_content(run)
                continue
            try:
                reply = self.reply_now()
                if reply is None:
                    if self._end is not None:
                        raise self._end
                    self._check_reply_length()
                    return  # not here yet
            except CONNECTION_ERRORS as exc:
                self._lose(run, exc)
                return
            self._answer(run, *reply)

    def _envelope_end(self) -> int:
        """Where the three envelope replies end in `_inbox` when they are 250, 250 (or 251)
        and 354, one line each; 0 while they have not all arrived, -1 when one is otherwise."""
        inbox = self._inbox
        start = 0
        for accepted in _ACCEPTED:
            end = inbox.find(b"\n", start)
            if end < 0:
                return 0
            if not inbox.startswith(accepted, start):
                return -1
            start = end + 1
        return start

    def _send_content(self, run: _Run) -> None:
        """The item's envelope was accepted: its content goes out, with the next envelope."""
        index, message, _ = run.item
        follower = run.follower = self._take(run.waiting, run.results)
        body = dot_stuff(message.data)
        if self.observer is not None:
            try:
                self.observer.attempting(message.send_id)  # from now on it may arrive
            except CONNECTION_ERRORS as exc:  # the journal's disk: as `_finish` would
                self.abort()
                run.results[index] = self._broken(message, exc, is_out=False)
                self._give_back(run)
                return
        run.is_out = True
        self._write(body + follower[2] if follower is not None else body)

    def _answer(self, run: _Run, code: int, text: str) -> None:
        """The item's reply came: its result, then the follower's turn (or the end)."""
        self.answered()
        index, message, _ = run.item
        run.results[index] = result_from_reply(message.send_id, code, text)
        follower = run.follower
        if code == 421 or not self.is_open:
            self.abort()
            self._give_back(run)
        elif follower is None:
            run.done.set_result(None)
        else:
            run.item, run.is_out, run.follower = follower, False, None
            self.expect_by()

    def _lose(self, run: _Run, exc: BaseException) -> None:
        """The connection ended (or broke the protocol) after the item's content went out."""
        self.abort()
        index, message, _ = run.item
        run.results[index] = self._broken(message, exc, is_out=True)
        self._give_back(run)

    def _broken(
        self, message: OutgoingMessage, exc: BaseException, *, is_out: bool
    ) -> DeliveryResult:
        """The result for a message whose connection failed: uncertain (`lost`) once its
        content went out, else an ordinary connection deferral. Both paths judge alike."""
        if is_out:
            reason = (
                f"no reply from {self.relay.address} after the message went out: "
                f"{self.describe(exc)}; it may have been delivered"
            )
            return lost_result(message.send_id, reason)
        reason = f"connection to {self.relay.address} lost: {self.describe(exc)}"
        return connection_result(message.send_id, reason)

    @staticmethod
    def _give_back(run: _Run) -> None:
        """The connection is gone: the follower, its envelope written and never answered,
        goes back to the front of the queue for another connection; the run ends."""
        if run.follower is not None:
            run.waiting.appendleft((run.follower[0], run.follower[1]))
        run.done.set_result(None)

    async def _finish(
        self,
        item: _Item,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
    ) -> _Item | None:
        """Complete the transaction whose envelope is written; return the next one begun."""
        index, message, _ = item
        follower: _Item | None = None
        code = 0
        is_out = False  #: the message's content was handed to the socket
        # the whole transaction, refusal and clean-up included, within the relay's timeout
        # (counted from its start when the driven path hands it over)
        self.expect_by(is_new=False)
        try:
            replies = await self._envelope_replies()
            if replies[2][0] != 354 or replies[0][0] != 250 or replies[1][0] > 251:
                # The verdict stands even if the clean-up after it loses the connection.
                results[index] = _refusal(message, replies)
                await self._reset_after(replies)
                self.answered()
                return self._start_next(waiting, results)
            if self.is_pipelining:
                follower = self._take(waiting, results)
            body = dot_stuff(message.data)
            if self.observer is not None:
                self.observer.attempting(message.send_id)  # from now on it may arrive
            is_out = True
            self._write(body + follower[2] if follower is not None else body)
            code, text = self.reply_now() or await self._read_reply()
        except CONNECTION_ERRORS as exc:
            self.abort()
            if results[index] is not None:
                return None
            results[index] = self._broken(message, exc, is_out=is_out)
        else:
            self.answered()
            results[index] = result_from_reply(message.send_id, code, text)
        if code == 421 or not self.is_open:
            self.abort()
            if follower is not None:  # its envelope went unanswered: another connection
                waiting.appendleft((follower[0], follower[1]))
            return None
        return follower if self.is_pipelining else self._start_next(waiting, results)

    def _start_next(
        self, waiting: deque[tuple[int, OutgoingMessage]], results: list[DeliveryResult | None]
    ) -> _Item | None:
        item = self._take(waiting, results) if self.is_open else None
        if item is not None:
            self._write_envelope(item[2])
        return item

    def _take(
        self, waiting: deque[tuple[int, OutgoingMessage]], results: list[DeliveryResult | None]
    ) -> _Item | None:
        """The next sendable message with its envelope commands; unsendable ones get results."""
        while waiting and self._budget > 0:
            index, message = waiting.popleft()
            try:
                envelope = self._envelope(message)
            except Exception as exc:  # a malformed message must not sink its neighbours
                _log.exception("cannot send message %s", message.send_id)
                reason = f"the SMTP client could not send this message: {exc!r}"
                envelope = connection_result(message.send_id, reason)
            if isinstance(envelope, DeliveryResult):
                results[index] = envelope
                continue
            self.sent_count += 1
            self._budget -= 1
            return index, message, envelope
        return None

    def _envelope(self, message: OutgoingMessage) -> bytes | DeliveryResult:
        """MAIL FROM, RCPT TO and DATA for `message`, or the result that it cannot go here."""
        problem = envelope_problem(message.send_id, message)
        if problem is not None:
            return problem
        is_utf8 = needs_smtputf8(message)
        if is_utf8 and "SMTPUTF8" not in self.extensions:
            return unsupported_result(message.send_id)
        if is_utf8:
            params, encoding = _UTF8_PARAMS, "utf-8"
        elif asks_8bitmime(message, "8BITMIME" in self.extensions):
            params, encoding = _8BIT_PARAMS, "ascii"
        else:
            params, encoding = b"", "ascii"
        return b"MAIL FROM:<%b>%b\r\nRCPT TO:<%b>\r\nDATA\r\n" % (
            message.mail_from.encode(encoding),
            params,
            message.rcpt.encode(encoding),
        )

    def _write_envelope(self, commands: bytes) -> None:
        """Write commands: all at once when pipelining, else the first one (MAIL FROM)."""
        if self.is_pipelining:
            self._write(commands)
        else:
            self._pending = commands.split(b"\r\n")[:-1]
            self._write(self._pending.pop(0) + b"\r\n")

    async def _envelope_replies(self) -> tuple[Reply, Reply, Reply]:
        """The replies to MAIL, RCPT and DATA; stops early at a 421 (or, unpipelined, at
        the first refusal, since the later commands were never sent)."""
        replies = [self.reply_now() or await self._read_reply()]
        while len(replies) < 3 and replies[-1][0] != 421:
            if not self.is_pipelining:
                if replies[-1][0] >= 400:
                    break
                self._write(self._pending.pop(0) + b"\r\n")
            replies.append(self.reply_now() or await self._read_reply())
        replies += [_NO_REPLY] * (3 - len(replies))
        return replies[0], replies[1], replies[2]

    async def _reset_after(self, replies: tuple[Reply, Reply, Reply]) -> None:
        """Leave the session ready for the next message after a refusal (RSET), or close it
        after a 421."""
        if 421 in (replies[0][0], replies[1][0], replies[2][0]):
            self.abort()
            return
        if replies[2][0] == 354:
            # The server took DATA although MAIL or RCPT failed: end an empty message.
            self._write(b".\r\n")
            await self._read_reply()
        self._write(b"RSET\r\n")
        if (await self._read_reply())[0] == 421:
            self.abort()


def _refusal(message: OutgoingMessage, replies: tuple[Reply, Reply, Reply]) -> DeliveryResult:
    """The result for a refused MAIL (the sender's problem), RCPT or DATA."""
    mail, rcpt, data = replies
    if mail[0] != 250:
        return result_from_reply(message.send_id, *mail, is_sender=True)
    if rcpt[0] not in (250, 251):
        return result_from_reply(message.send_id, *rcpt)
    return result_from_reply(message.send_id, *data)
