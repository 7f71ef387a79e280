"""What every transport promises, and what an SMTP reply means (docs/standards.md §6–7).

A transport takes built messages and gives back one `DeliveryResult` per message, in order; it
never raises for a problem with one message. The meaning of a reply (`classify`) and the outcome
that follows (`outcome_for`) live here, in tables, so every transport judges replies alike.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage, ReplyKind


class SendObserver(Protocol):
    """Told of each message as it goes: the delivery journal (see `mailer.delivery.journal`)."""

    def attempting(self, send_id: int) -> None:
        """The message is about to go to a server (it may be delivered from now on)."""

    def answered(self, send_id: int, is_accepted: bool) -> None:
        """The message has its result: accepted by the server, or not (refused, deferred).
        Never told of a message lost on the wire (`ReplyKind.LOST`): it stays begun."""


@runtime_checkable
class Transport(Protocol):
    """Sends built messages. Call `open`, then `send_batch` any number of times, then `close`.

    All three must run in one event loop; a transport used from a new loop reconnects.
    """

    async def open(self) -> None: ...

    async def send_batch(
        self, messages: Sequence[OutgoingMessage], observer: SendObserver | None = None
    ) -> list[DeliveryResult]:
        """One result per message, same order; never raises for a per-message problem.

        `observer` hears of each message the moment it is begun and the moment it is accepted.
        """
        ...

    async def close(self) -> None: ...


#: (reply code or class as "4xx", enhanced code prefix or "", kind); the first match wins.
#: Enhanced codes are RFC 3463 class.subject.detail; a reply without one is judged by its code.
REPLY_RULES: tuple[tuple[str, str, ReplyKind], ...] = (
    ("2xx", "", ReplyKind.OK),
    # 421: the server is closing the channel, usually because we go too fast.
    ("421", "", ReplyKind.RATE),
    # 4.7.x: rate or reputation (greylisting is often 451 4.7.1, Gmail 421 4.7.28).
    ("4xx", "4.7.", ReplyKind.RATE),
    ("4xx", "", ReplyKind.SOFT),
    # 5.7.x: authentication or policy, the sender's defect; never suppress the recipient.
    ("5xx", "5.7.", ReplyKind.POLICY),
    # Mailbox full is soft even when the server says 5xx (RFC 3463 §3.3).
    ("5xx", "5.2.2", ReplyKind.SOFT),
    # Message too big for this server: our message's problem, not the address's.
    ("5xx", "5.2.3", ReplyKind.POLICY),
    ("5xx", "5.1.", ReplyKind.HARD),
    ("5xx", "5.2.", ReplyKind.HARD),
    ("5xx", "5.4.", ReplyKind.HARD),
    # 5.3.x mail system, 5.5.x protocol, 5.6.x content: something about what we sent.
    ("5xx", "5.3.", ReplyKind.POLICY),
    ("5xx", "5.5.", ReplyKind.POLICY),
    ("5xx", "5.6.", ReplyKind.POLICY),
    # No usable enhanced code: 552 is "storage exceeded", 554 is mostly a content or spam block.
    ("552", "", ReplyKind.SOFT),
    ("554", "", ReplyKind.POLICY),
    ("5xx", "", ReplyKind.HARD),
)

#: What to do with a message given the kind of its reply and the class of its code.
_OUTCOME_BY_CLASS = {"2": Outcome.SENT, "4": Outcome.DEFERRED, "5": Outcome.FAILED}

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def classify(code: int, enhanced: str = "") -> ReplyKind:
    """The meaning of a reply: `classify(550, "5.1.1") is ReplyKind.HARD`.

    An enhanced code whose class differs from the reply code's is ignored (RFC 3463 §2).
    A code outside 2xx/4xx/5xx is a protocol surprise: soft, so the message is retried.
    """
    text = str(code)
    if enhanced and enhanced[0] != text[0]:
        enhanced = ""
    dotted = enhanced + "."
    for code_rule, prefix, kind in REPLY_RULES:
        if code_rule[1:] == "xx":
            if text[0] != code_rule[0]:
                continue
        elif code_rule != text:
            continue
        if not prefix or dotted.startswith(prefix if prefix.endswith(".") else prefix + "."):
            return kind
    return ReplyKind.SOFT


def outcome_for(code: int) -> Outcome:
    """2xx sent, 4xx deferred, 5xx failed; anything else deferred (retrying is safe)."""
    return _OUTCOME_BY_CLASS.get(str(code)[0], Outcome.DEFERRED)


def enhanced_code(code: int, text: str) -> str:
    """The RFC 3463 code at the start of a reply's text ("5.1.1 no such user" → "5.1.1")."""
    match = _ENHANCED.match(text)
    if match is None or match.group(1) != str(code)[0]:
        return ""
    return match.group(0)


def result_from_reply(
    send_id: int, code: int, text: str, *, is_sender: bool = False
) -> DeliveryResult:
    """The result for a message that got the reply `code text` (text without the code).

    `is_sender` marks a refused MAIL FROM: whatever the code says, the recipient is not at
    fault, so a permanent refusal is POLICY (alert, don't suppress) rather than HARD.
    """
    enhanced = enhanced_code(code, text)
    outcome, kind = _verdict(code, enhanced, is_sender)
    return DeliveryResult(send_id, outcome, kind, code, enhanced, text)


@functools.lru_cache(maxsize=256)
def _verdict(code: int, enhanced: str, is_sender: bool) -> tuple[Outcome, ReplyKind]:
    """What a reply means, worked out once for each code and enhanced code a relay gives
    (nearly every reply is the same "250 2.0.0"): the rules' walk was ~2 % of a worker's time
    (docs/performance.md §16)."""
    kind = classify(code, enhanced)
    if is_sender and kind is ReplyKind.HARD:
        kind = ReplyKind.POLICY
    return outcome_for(code), kind


def connection_result(send_id: int, reason: str) -> DeliveryResult:
    """No reply was had: refused, reset, timed out or dropped. Retried later."""
    return DeliveryResult(send_id, Outcome.DEFERRED, ReplyKind.CONNECTION, None, "", reason)


def lost_result(send_id: int, reason: str) -> DeliveryResult:
    """The message's content went out and no reply came: the relay may have it (RFC 1047).
    Deferred, so at-least-once mail is retried; recording makes marketing mail `unknown`."""
    return DeliveryResult(send_id, Outcome.DEFERRED, ReplyKind.LOST, None, "", reason)


#: The reason given when a message needs SMTPUTF8 and the server lacks it.
NO_SMTPUTF8 = "the server does not offer SMTPUTF8, which this non-ASCII address needs"


def unsupported_result(send_id: int, reason: str = NO_SMTPUTF8) -> DeliveryResult:
    """The server lacks an extension this message needs; retrying the same server won't help."""
    return DeliveryResult(send_id, Outcome.FAILED, ReplyKind.UNSUPPORTED, None, "", reason)


#: What `dot_stuff` doubles (CRLF ".") can only be where this matches.
_DOT_AFTER_LF = re.compile(rb"\n\.")

_UNSAFE_IN_ADDRESS = re.compile(r"[\x00-\x20<>\x7f]")


def envelope_problem(send_id: int, message: OutgoingMessage) -> DeliveryResult | None:
    """A FAILED result when an envelope address could not go into a command safely.

    Addresses reach us validated; this guards the wire against CR, LF or angle brackets that
    would let one address smuggle commands into the session.
    """
    if not message.rcpt or _UNSAFE_IN_ADDRESS.search(message.rcpt):
        reason = f"the recipient address {message.rcpt!r} cannot be used in RCPT TO"
        return DeliveryResult(send_id, Outcome.FAILED, ReplyKind.HARD, None, "", reason)
    if _UNSAFE_IN_ADDRESS.search(message.mail_from):
        reason = (
            f"the envelope sender {message.mail_from!r} cannot be used in MAIL FROM; "
            "check MAILER_ENVELOPE_SENDER"
        )
        return DeliveryResult(send_id, Outcome.FAILED, ReplyKind.POLICY, None, "", reason)
    return None


def needs_smtputf8(message: OutgoingMessage) -> bool:
    """True when the envelope carries a non-ASCII address, whatever the flag says."""
    return message.needs_smtputf8 or not (message.mail_from.isascii() and message.rcpt.isascii())


def asks_8bitmime(message: OutgoingMessage, offers_8bitmime: bool) -> bool:
    """Whether MAIL FROM says BODY=8BITMIME for `message` (RFC 6152). A server without
    8BITMIME gets an 8bit message downgraded first (its parts quoted-printable, `data`
    replaced) when its builder can; otherwise it goes as it is, as before 8BITMIME existed."""
    if message.data.isascii():
        return False
    if offers_8bitmime:
        return True
    if message.downgrade is not None:
        message.data, message.downgrade = message.downgrade(), None
    return False


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload for `data`: leading dots doubled, CRLF before the final dot (RFC 5321)."""
    if data.startswith(b"."):
        data = b"." + data
    # most messages have no line to stuff: the regular expression finds that out in half the
    # time `replace` takes to search 5 KB (it looks for LF with memchr), docs/performance.md §6
    stuffed = data.replace(b"\r\n.", b"\r\n..") if _DOT_AFTER_LF.search(data) else data
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"
