"""Our own small SMTP client: RFC 2920 PIPELINING, one message per transaction.

When the server advertises PIPELINING, each write carries the body of one message followed by
MAIL FROM, RCPT TO and DATA of the next (RFC 2920 §3.1 lets message content open a group), so a
message costs one write and one round trip, where a command-at-a-time client (aiosmtplib) needs
four (docs/performance.md §3, lever 6). Servers without PIPELINING get the same commands one
at a time.
Replies are judged by `base.result_from_reply`, exactly as the aiosmtplib transport judges them.
"""

from __future__ import annotations

import logging
from collections import deque

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
from mailer.transports.session import CONNECTION_ERRORS, SmtpSession

_log = logging.getLogger(__name__)

Reply = tuple[int, str]
#: A message taken from the batch: its index in the batch, itself, its envelope commands.
_Item = tuple[int, OutgoingMessage, bytes]

_UTF8_PARAMS = b" SMTPUTF8 BODY=8BITMIME"
_8BIT_PARAMS = b" BODY=8BITMIME"
_NO_REPLY: Reply = (0, "")


class PipeliningConnection(SmtpSession):
    """An SMTP session that sends batches, pipelined when the server allows."""

    _budget = 0  #: transactions this send_from() may still begin

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
            item = await self._finish(item, waiting, results)

    async def _finish(
        self,
        item: _Item,
        waiting: deque[tuple[int, OutgoingMessage]],
        results: list[DeliveryResult | None],
    ) -> _Item | None:
        """Complete the transaction whose envelope is written; return the next one begun."""
        assert self._writer is not None
        index, message, _ = item
        follower: _Item | None = None
        code = 0
        is_out = False  #: the message's content was handed to the socket
        # the whole transaction, refusal and clean-up included, within the relay's timeout
        self.expect_by()
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
            self._writer.write(body + follower[2] if follower is not None else body)
            code, text = self.reply_now() or await self._read_reply()
        except CONNECTION_ERRORS as exc:
            self.abort()
            if results[index] is not None:
                return None
            if is_out:
                reason = (
                    f"no reply from {self.relay.address} after the message went out: "
                    f"{self.describe(exc)}; it may have been delivered"
                )
                results[index] = lost_result(message.send_id, reason)
            else:
                reason = f"connection to {self.relay.address} lost: {self.describe(exc)}"
                results[index] = connection_result(message.send_id, reason)
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
            self._write(item[2])
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

    def _write(self, commands: bytes) -> None:
        """Write commands: all at once when pipelining, else the first one (MAIL FROM)."""
        assert self._writer is not None
        if self.is_pipelining:
            self._writer.write(commands)
        else:
            self._pending = commands.split(b"\r\n")[:-1]
            self._writer.write(self._pending.pop(0) + b"\r\n")

    async def _envelope_replies(self) -> tuple[Reply, Reply, Reply]:
        """The replies to MAIL, RCPT and DATA; stops early at a 421 (or, unpipelined, at
        the first refusal, since the later commands were never sent)."""
        replies = [self.reply_now() or await self._read_reply()]
        while len(replies) < 3 and replies[-1][0] != 421:
            if not self.is_pipelining:
                if replies[-1][0] >= 400:
                    break
                assert self._writer is not None
                self._writer.write(self._pending.pop(0) + b"\r\n")
            replies.append(self.reply_now() or await self._read_reply())
        replies += [_NO_REPLY] * (3 - len(replies))
        return replies[0], replies[1], replies[2]

    async def _reset_after(self, replies: tuple[Reply, Reply, Reply]) -> None:
        """Leave the session ready for the next message after a refusal (RSET), or close it
        after a 421."""
        assert self._writer is not None
        if 421 in (replies[0][0], replies[1][0], replies[2][0]):
            self.abort()
            return
        if replies[2][0] == 354:
            # The server took DATA although MAIL or RCPT failed: end an empty message.
            self._writer.write(b".\r\n")
            await self._read_reply()
        self._writer.write(b"RSET\r\n")
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
