"""What passes between message building and the transports: one message out, one result back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


@dataclass(slots=True)
class OutgoingMessage:
    """One fully built (and, when configured, DKIM-signed) message for one recipient."""

    send_id: int
    mail_from: str  #: envelope sender (Return-Path), VERP-ready
    rcpt: str  #: envelope recipient
    data: bytes  #: the exact bytes to send, CRLF line ends, no dot-stuffing
    message_id: str  #: the Message-ID header value, with angle brackets
    needs_smtputf8: bool = False
    #: `data` again with its 8bit parts quoted-printable, for a relay without 8BITMIME
    #: (RFC 6152); None when `data` needs no 8BITMIME or its builder cannot redo it.
    downgrade: Callable[[], bytes] | None = None


class Outcome(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"  #: 4xx, timeouts, refused or dropped connections: retry later
    FAILED = "failed"  #: 5xx or an unusable address: never retried


class ReplyKind(StrEnum):
    """What a reply means for the recipient and for us (docs/standards.md §6)."""

    OK = "ok"
    HARD = "hard"  #: 5.1.x and other permanent recipient failures: suppress the address
    SOFT = "soft"  #: mailbox full, greylisting, temporary trouble: retry
    POLICY = "policy"  #: 5.7.x: the sender's problem (auth, policy); never suppress, alert
    RATE = "rate"  #: 4.7.x / 421: slow down
    CONNECTION = "connection"  #: no usable connection (refused, reset, timeout, TLS)
    #: The message went out whole and no reply came (the line dropped, or the relay took too
    #: long): it may have been delivered (RFC 1047). Service and policy mail is retried;
    #: marketing mail becomes `unknown`, never sent twice.
    LOST = "lost"
    UNSUPPORTED = "unsupported"  #: the server lacks a needed extension (e.g. SMTPUTF8)


@dataclass(slots=True)
class DeliveryResult:
    send_id: int
    outcome: Outcome
    kind: ReplyKind
    code: int | None = None  #: SMTP reply code, None when no reply was had
    enhanced: str = ""  #: enhanced status code, e.g. "5.1.1"
    reply: str = ""  #: reply text or the reason in words
