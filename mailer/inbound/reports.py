"""Reading bounce (DSN, RFC 3464) and complaint (ARF, RFC 5965) reports into events.

Pure parsing, no database: `parse_report(bytes)` gives the `BounceEvent`s of a report and never
raises on content, whatever the bytes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.policy import default as default_policy
from email.utils import parseaddr
from typing import Any

#: The recipient actions of a DSN worth an event (RFC 3464 §2.3.3); delivered etc. are not.
_ACTIONS = frozenset({"failed", "delayed"})
#: Lines that may start a MIME part ("--boundary") in a report: a DSN or ARF report has 4,
#: a quoted original message a few more.
MAX_BOUNDARY_LINES = 200
#: Recipients one report may speak for; a real DSN names one or a few.
MAX_EVENTS = 100
_log = logging.getLogger(__name__)
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")


@dataclass(frozen=True)
class BounceEvent:
    """One recipient's fate from a DSN, or one complaint from an ARF report.

    `kind` is "failed", "delayed" or "complaint"; `status` the RFC 3463 code ("5.1.1"),
    `diagnostic` the remote server's words, `message_id` the original message's Message-ID,
    `reporter` the report's From address (lowercase), which says nothing until checked.
    """

    kind: str
    recipient: str = ""
    status: str = ""
    diagnostic: str = ""
    feedback_type: str = ""
    message_id: str = ""
    reporter: str = ""


def parse_report(data: bytes) -> list[BounceEvent]:
    """The events of a DSN or ARF report; [] for any other message (never raises on content).

    A message of thousands of MIME parts is no report, and parsing it would cost seconds of
    CPU: it is refused before parsing. At most MAX_EVENTS events come from one report.
    """
    if data.count(b"\n--") > MAX_BOUNDARY_LINES:
        _log.info("over %d MIME boundaries: taken for no report", MAX_BOUNDARY_LINES)
        return []
    try:
        return _parse(data)[:MAX_EVENTS]
    except Exception:  # the email package still trips over some malformed input
        _log.warning("a malformed report could not be parsed", exc_info=True)
        return []


def _parse(data: bytes) -> list[BounceEvent]:
    message = BytesParser(policy=default_policy).parsebytes(data)
    if message.get_content_type() != "multipart/report":
        return []
    report_type = str(message.get_param("report-type", "")).lower()
    parts = list(message.iter_parts()) if isinstance(message, EmailMessage) else []
    original = _original_message_id(parts)
    if report_type == "delivery-status":
        events = _dsn_events(parts, original)
    elif report_type == "feedback-report":
        events = _arf_events(parts, original)
    else:
        return []
    reporter = parseaddr(_one_line(message.get("From", "")))[1].lower()
    return [replace(event, reporter=reporter) for event in events]


def _dsn_events(parts: Sequence[Message], message_id: str) -> list[BounceEvent]:
    status_part = next(
        (p for p in parts if p.get_content_type() == "message/delivery-status"), None
    )
    if status_part is None:
        return []
    blocks = status_part.get_payload()
    if not isinstance(blocks, list):
        return []
    events = []
    for block in blocks[1:]:  # the first block is per message (Reporting-MTA …)
        if not isinstance(block, Message):
            continue
        action = str(block.get("Action", "")).strip().lower()
        if action not in _ACTIONS:
            continue
        status = _STATUS.search(str(block.get("Status", "")))
        events.append(
            BounceEvent(
                kind=action,
                recipient=_address(block.get("Final-Recipient") or block.get("Original-Recipient")),
                status=status.group(0) if status else "",
                diagnostic=_one_line(block.get("Diagnostic-Code", "")),
                message_id=message_id,
            )
        )
    return events


def _arf_events(parts: Sequence[Message], message_id: str) -> list[BounceEvent]:
    feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback is None:
        return []
    blocks = feedback.get_payload()
    if not isinstance(blocks, list) or not blocks:
        return []
    fields = blocks[0]
    if not isinstance(fields, Message):
        return []
    return [
        BounceEvent(
            kind="complaint",
            recipient=_address(fields.get("Original-Rcpt-To")),
            feedback_type=str(fields.get("Feedback-Type", "")).strip().lower(),
            message_id=message_id,
        )
    ]


def _original_message_id(parts: Sequence[Message]) -> str:
    """The Message-ID of the original message, from the report's third part if it has one."""
    for part in parts[2:]:
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                return _one_line(inner.get("Message-ID", ""))
        elif kind == "text/rfc822-headers":
            text = part.get_payload(decode=True) or b""
            assert isinstance(text, bytes)
            headers = HeaderParser().parsestr(text.decode("utf-8", "replace"))
            return _one_line(headers.get("Message-ID", ""))
    return ""


def _address(value: Any) -> str:
    """`rfc822; pat@x.example` → `pat@x.example` (RFC 3464 address-type; value)."""
    text = _one_line(value or "")
    return text.partition(";")[2].strip() if ";" in text else text


def _one_line(value: Any) -> str:
    """One line of printable text, at most 1,000 characters: what a report says goes into the
    database and the audit log, so no NUL (PostgreSQL refuses it), no lone surrogate (not
    UTF-8), no control or bidi-override character."""
    text = " ".join(str(value).split())
    return "".join(ch for ch in text if ch.isprintable())[:1000]
