"""Fuzzing the inbound report parser and handler (hypothesis): DSN, ARF and malformed MIME
give events or nothing, never an exception, and the SMTP handler always answers cleanly."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.inbound import BounceEvent, parse_report
from mailer.inbound.reports import MAX_EVENTS
from mailer.inbound.server import _Handler
from mailer.models import Contact
from mailer.outgoing import OutgoingMessage
from mailer.runtime import Runtime
from tests.test_bounces import _mailed

#: Header names a report's blocks use, and some it should not.
NAMES = ["Final-Recipient", "Original-Recipient", "Action", "Status", "Diagnostic-Code",
         "Reporting-MTA", "Feedback-Type", "Original-Rcpt-To", "User-Agent", "Version",
         "Message-ID", "Content-Type", "Content-Transfer-Encoding", "From", "X-\u00e9"]  # fmt: skip
#: Values that have broken email parsers: encoded words, odd charsets, bare CR, NUL, long runs.
VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from([
        "rfc822; pat@client.example", "rfc822;", ";", "failed", "delayed", "5.1.1", "4.4.7",
        "9.9.9", "smtp; 550 5.1.1 unknown", "abuse", "not-spam", "=?utf-8?q?=C3=A9?=",
        "=?bogus?b?!!!?=", "=?utf-8?b?", "<a@b>", "<1.2.0123456789abcdef@cpi.example>",
        "multipart/report; report-type=delivery-status; boundary=\"RB\"",
        "multipart/report; report-type=feedback-report; boundary=RB",
        "message/rfc822", "text/rfc822-headers", "message/delivery-status",
        "message/feedback-report", "base64", "quoted-printable", "8bit", "x" * 2000,
        "a\rb", "a\x00b", "\u202e", "(comment", '"unterminated', "<<<>>>", "@", "a@",
    ]),
)  # fmt: skip
HEADER = st.tuples(st.sampled_from(NAMES), VALUES).map(lambda nv: f"{nv[0]}: {nv[1]}")
BLOCK = st.lists(HEADER, max_size=6).map(lambda lines: "\r\n".join(lines) + "\r\n\r\n")
BODY = st.one_of(
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.lists(BLOCK, max_size=4).map("".join),
    st.sampled_from(["", "\r\n", "--RB\r\n", "--RB--\r\n", "=\r\n=ZZ", "!!!notbase64"]),
)
PART = st.tuples(st.lists(HEADER, max_size=4), BODY).map(
    lambda hb: "\r\n".join(hb[0]) + "\r\n\r\n" + hb[1]
)


@st.composite
def reports(draw: st.DrawFn) -> bytes:
    """A multipart/report as a confused or hostile MTA might write one."""
    report_type = draw(st.sampled_from(["delivery-status", "feedback-report", "other", ""]))
    boundary = draw(st.sampled_from(["RB", "", "R B", "--", "x" * 80]))
    head = draw(st.lists(HEADER, max_size=3))
    content_type = f'multipart/report; report-type={report_type}; boundary="{boundary}"'
    kinds = ["message/delivery-status", "message/feedback-report", "message/rfc822",
             "text/rfc822-headers", "text/plain", "multipart/mixed; boundary=RB"]  # fmt: skip
    parts = draw(
        st.lists(
            st.tuples(st.sampled_from(kinds), PART).map(
                lambda kp: f"Content-Type: {kp[0]}\r\n{kp[1]}"
            ),
            max_size=4,
        )
    )
    body = "".join(f"--{boundary}\r\n{part}\r\n" for part in parts)
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n"
    text = "\r\n".join([*head, f"Content-Type: {content_type}", "MIME-Version: 1.0"])
    return (text + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")


ANY_REPORT = st.one_of(reports(), st.binary(max_size=1500))


def _seed(diagnostic: str, status: str = "5.1.1") -> bytes:
    return (
        'Content-Type: multipart/report; report-type=delivery-status; boundary="RB"\r\n\r\n'
        "--RB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        f"Final-Recipient: rfc822; x@y\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n\r\n"
        "--RB\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "Message-ID: <1.2.0123456789abcdef@cpi.example>\r\n\r\n--RB--\r\n"
    ).encode("utf-8", "surrogateescape")


#: Reports that reach the database with awkward text: a NUL (PostgreSQL refuses it in text),
#: a lone surrogate, control characters, a huge diagnostic.
SEEDS = [
    _seed("smtp; 550 5.1.1 a\x00b"),
    _seed("smtp; 550 5.1.1 \udcff"),
    _seed("smtp; 550 5.1.1 \x01\x1b[31m"),
    _seed("smtp; 550 5.1.1 " + "x" * 5000),
    _seed("smtp; 452 4.2.2 full\x00", "4.2.2"),
]


@settings(max_examples=150, deadline=None)
@given(ANY_REPORT)
def test_any_report_gives_a_few_well_formed_events_and_never_raises(data: bytes) -> None:
    events = parse_report(data)
    assert isinstance(events, list) and len(events) <= MAX_EVENTS
    for event in events:
        assert isinstance(event, BounceEvent)
        assert event.kind in ("failed", "delayed", "complaint")
        assert all(len(v) <= 1000 for v in (event.recipient, event.diagnostic, event.message_id))


@pytest.fixture
def mailed(rt: Runtime, make_contact: Callable[..., Contact]) -> OutgoingMessage:
    return _mailed(rt, make_contact())


def _as_report_about(original: OutgoingMessage, data: bytes) -> bytes:
    """`data` with the original's Message-ID and recipient where the generator put ours."""
    return data.replace(b"<1.2.0123456789abcdef@cpi.example>", original.message_id.encode())


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(ANY_REPORT, st.sampled_from(SEEDS)), to_verp=st.booleans())
def test_the_inbound_handler_answers_every_report_with_a_final_reply(
    rt: Runtime, mailed: OutgoingMessage, data: bytes, to_verp: bool
) -> None:
    handler = _Handler(rt, ThreadPoolExecutor(max_workers=1))
    rcpt = mailed.mail_from if to_verp else rt.settings.envelope_sender
    data = _as_report_about(mailed, data)
    reply = handler.process(data, [rcpt, rt.settings.unsubscribe_mailto], "192.0.2.1")
    # 250: taken (acted on or not); never a 451 that makes the sender retry bad input forever
    assert reply.startswith("250 "), reply
