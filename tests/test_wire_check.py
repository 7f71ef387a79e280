"""The bench's in-run check (tests/wire_check.py): what real clients send to Postfix's
smtp-sink is read off the loopback interface, every message counted and checked; a broken
message is named with what is wrong with it; bytes that come cut anywhere, late or twice are
put back in order, and bytes that never came are reported."""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import struct
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import pytest

from mailer.config import Settings
from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage
from mailer.transports.pipelining import PipeliningConnection
from mailer.transports.relays import parse_relay
from tests.real_messages import build_with, promotion, unsubscribe_url
from tests.required_tools import must_not_skip, require
from tests.smtp_fixtures import SMTP_SINK, SmtpSink, start_smtp_sink
from tests.wire_check import (
    NEEDS_ROOT,
    CheckResult,
    Expected,
    WireCheck,
    check_message,
    packet_socket_problem,
    undo_dot_stuffing,
)

ROOT = Path(__file__).resolve().parent.parent
NAMES = [("Pat", "Example"), ("José", "Núñez"), ("Siobhán", "O'Brien"), ("Ana", "Li")]


@pytest.fixture
def build_settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "MAILER_VAR_DIR": str(tmp_path / "var"),
            "MAILER_SECRET_KEY": "wire-check-test-secret-0123456789",
            "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
            "MAILER_PUBLIC_BASE_URL": "https://mail.cpi.example",  # RFC 8058 wants https
        },
        env_file=None,
    )


def _require_packet_socket() -> None:
    """Skip (laptop) or fail (root, CI) when this process may not open a packet socket."""
    reason = packet_socket_problem()
    if reason is not None:
        if must_not_skip():
            pytest.fail(f"{reason}; as root or in CI no test may be skipped", pytrace=False)
        pytest.skip(reason)


def _messages(settings: Settings, count: int) -> tuple[list[OutgoingMessage], dict]:
    """`count` real promotions to distinct recipients, and what each must say."""
    sent, expected = [], {}
    campaign = promotion(settings)  # compiled once, built per recipient
    for n in range(count):
        first, last = NAMES[n % len(NAMES)]
        address = f"contact{n}@org{n}.example"
        contact = SimpleNamespace(id=n + 1, email=address)
        sent.append(build_with(campaign, contact, send_id=n + 1, first_name=first, last_name=last))
        expected[address] = Expected(f"{first} {last}", f"Hello {first},")
    return sent, expected


def _send_smtplib(sink: SmtpSink, messages: list[OutgoingMessage], sessions: int) -> None:
    """Send from `sessions` smtplib sessions at once (one command at a time)."""
    errors: list[BaseException] = []

    def session(share: list[OutgoingMessage]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as client:
                for built in share:
                    client.sendmail(built.mail_from, [built.rcpt], built.data)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=session, args=(messages[i::sessions],)) for i in range(sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def _send_pipelined(sink: SmtpSink, messages: list[OutgoingMessage], sessions: int) -> None:
    """Send as the workers do: mailer's own client, each body with the next envelope."""

    async def session(share: list[OutgoingMessage]) -> None:
        conn = await PipeliningConnection.open(parse_relay(sink.url), "mailer.test")
        assert conn.is_pipelining
        results: list[DeliveryResult | None] = [None] * len(share)
        await conn.send_from(deque(enumerate(share)), results, budget=len(share))
        await conn.quit()
        assert all(r is not None and r.outcome is Outcome.SENT for r in results), results

    async def run() -> None:
        await asyncio.gather(*(session(messages[i::sessions]) for i in range(sessions)))

    asyncio.run(run())


def _through_sink(messages, expected, *, every=1, send=_send_smtplib, sessions=4):  # type: ignore[no-untyped-def]
    require(SMTP_SINK)
    _require_packet_socket()
    sink = start_smtp_sink()
    try:
        with WireCheck(sink.port, expected.get, every=every) as check:
            send(sink, messages, sessions)
            return check.finish()
    finally:
        sink.process.kill()
        sink.process.wait()


@pytest.mark.parametrize("send", [_send_pipelined, _send_smtplib], ids=["pipelined", "smtplib"])
def test_concurrent_sessions_are_followed_apart_and_every_message_checks(
    build_settings: Settings, send
) -> None:
    messages, expected = _messages(build_settings, 240)
    assert min(len(m.data) for m in messages) > 4096
    result = _through_sink(messages, expected, send=send, sessions=12)
    assert result.problems == []
    assert (result.messages, result.checked) == (240, 240)


def test_sampling_checks_one_in_every_and_other_ports_go_unseen(
    build_settings: Settings,
) -> None:
    messages, expected = _messages(build_settings, 25)
    require(SMTP_SINK)
    _require_packet_socket()
    sink, other = start_smtp_sink(), start_smtp_sink()
    try:
        with WireCheck(sink.port, expected.get, every=10) as check:
            _send_pipelined(other, messages, sessions=2)  # the filter drops these
            _send_pipelined(sink, messages, sessions=3)
            result = check.finish()
    finally:
        for process in (sink.process, other.process):
            process.kill()
            process.wait()
    assert (result.messages, result.checked, result.problems) == (25, 3, [])  # 1st, 11th, 21st
    # acknowledgements and replies are dropped in the kernel: a segment or so per message
    assert result.segments < 25 * 2


def test_a_broken_message_is_named_with_what_is_wrong(build_settings: Settings) -> None:
    messages, expected = _messages(build_settings, 5)
    good, m1, m2, m3, m4 = messages
    link = unsubscribe_url(m2).encode()
    broken = [
        good,
        _with(m1, m1.data.replace(b"Hello Jos\xc3\xa9,", b"Hello there,")),  # no name
        _with(m2, m2.data.replace(b"these emails: " + link, b"these emails: " + link[:-3] + b"xy")),
        _with(m3, m3.data.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"")),
        _with(m4, m4.data.replace(b"Hello Pat,", b"Hello Ana,", 1)),  # in the text part only
    ]
    result = _through_sink(broken, expected, sessions=2)
    assert (result.messages, result.checked) == (5, 5)
    problems = "\n".join(result.problems)
    assert good.message_id not in problems
    assert f"{m1.message_id}: the text body does not say 'Hello José,'" in problems
    assert f"{m1.message_id}: the HTML body does not say 'Hello José,'" in problems
    assert f"{m2.message_id}: the text body does not hold List-Unsubscribe's link" in problems
    assert f"{m3.message_id}: List-Unsubscribe-Post appears 0 times, not once" in problems
    assert f"{m4.message_id}: the text body does not say 'Hello Pat,'" in problems
    assert f"{m4.message_id}: the HTML body" not in problems
    assert len(result.problems) == 5


def _with(message: OutgoingMessage, data: bytes) -> OutgoingMessage:
    return OutgoingMessage(
        send_id=message.send_id,
        mail_from=message.mail_from,
        rcpt=message.rcpt,
        data=data,
        message_id=message.message_id,
    )


def test_a_message_to_someone_else_or_to_no_contact_is_caught(build_settings: Settings) -> None:
    messages, expected = _messages(build_settings, 1)
    built = messages[0]
    problems = check_message(built.data, ["someone@else.example"], expected.get)
    assert any("but the envelope recipients are ['someone@else.example']" in p for p in problems)
    stranger = check_message(built.data, [built.rcpt], {}.get)
    assert any(f"{built.rcpt} is not one of the run's contacts" in p for p in stranger)
    assert check_message(built.data, [built.rcpt], expected.get) == []


# --- the stream put back together, from segments made here -------------------------------

CLIENT, SINK_PORT, FIRST_SEQ = 40_000, 2525, 4_294_967_000  # the sequence numbers wrap


def _segment(seq: int, payload: bytes = b"", flags: int = 0x18, port: int = CLIENT) -> bytes:
    """An IPv4 packet holding a TCP segment from `port` to the sink, as the socket gets it."""
    tcp = struct.pack("!HHIIBBHHH", port, SINK_PORT, seq % (1 << 32), 0, 5 << 4, flags, 0, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, bytes(4), bytes(4))
    return ip + tcp + payload


def _feed(check: WireCheck, packets: list[bytes]) -> CheckResult:
    for packet in packets:
        buffer = bytearray(packet)
        check._segment(buffer, len(buffer))
    return check._result


def _stream(messages: list[OutgoingMessage]) -> bytes:
    """What a pipelining client writes: EHLO, then each envelope, body and final dot."""
    out = [b"EHLO mailer.test\r\n"]
    for built in messages:
        body = built.data.replace(b"\r\n.", b"\r\n..")
        out.append(f"MAIL FROM:<{built.mail_from}>\r\nRCPT TO:<{built.rcpt}>\r\nDATA\r\n".encode())
        out.append(body + b".\r\n")
    return b"".join(out) + b"QUIT\r\n"


@pytest.mark.parametrize("every", [1, 3, 1000])
def test_segments_cut_anywhere_repeated_or_out_of_order_are_put_back_in_order(
    build_settings: Settings, every: int
) -> None:
    # Given a connection's stream, with a dot-stuffed line and an empty message among them
    messages, expected = _messages(build_settings, 6)
    dotted = messages[2].data.replace(b"\r\n\r\nHello", b"\r\n\r\n.hidden line\r\nHello", 1)
    messages[2] = _with(messages[2], dotted)
    stream = _stream(messages).replace(
        b"QUIT\r\n", b"MAIL FROM:<a@cpi.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n.\r\nQUIT\r\n"
    )
    # When it comes in segments cut anywhere (inside the final dot and the envelope too),
    # one of them sent twice and one overlapping the bytes before it; as from any client,
    # which sends a message only once the server said 354, no segment ends two messages
    empty = stream.rindex(b".\r\nQUIT")
    cuts = sorted({1, 7, 20, 4096, 9000, *range(1_013, len(stream), 1_013), empty, empty + 1})
    spans = list(zip([0, *cuts], [*cuts, len(stream)], strict=True))
    packets = [_segment(FIRST_SEQ - 1, flags=0x02)]  # SYN
    for start, end in spans:
        packets.append(_segment(FIRST_SEQ + start, stream[start:end]))
    packets.insert(5, packets[4])  # retransmitted
    start, end = spans[10]
    packets.insert(12, _segment(FIRST_SEQ + start - 500, stream[start - 500 : end]))
    packets.append(_segment(FIRST_SEQ + len(stream), flags=0x11))  # FIN
    check = WireCheck(SINK_PORT, expected.get, every=every)
    result = _feed(check, packets)
    # Then every message is counted and one in `every` checked, the dotted line as built
    assert result.messages == 7  # the six, and the empty one
    assert result.checked == len(range(0, 7, every))
    assert [p for p in result.problems if "(no Message-ID)" not in p] == []
    assert check._connections == {}  # the FIN ended it


@pytest.mark.parametrize("every", [1, 2, 1000])
def test_segments_as_mailers_client_writes_them_are_taken_where_they_lie(
    build_settings: Settings, every: int
) -> None:
    # Given the segments mailer's pipelining client sends: the first envelope alone, then
    # each body with the next envelope, on two connections taking turns
    messages, expected = _messages(build_settings, 8)
    packets = []
    for port, share in ((CLIENT, messages[0::2]), (CLIENT + 1, messages[1::2])):
        writes = [b"EHLO mailer.test\r\n"]
        for built in share:
            envelope = f"MAIL FROM:<{built.mail_from}>\r\nRCPT TO:<{built.rcpt}>\r\nDATA\r\n"
            writes[-1] += envelope.encode()
            writes.append(built.data + b".\r\n")
        writes[-1] += b"QUIT\r\n"
        seq, mine = FIRST_SEQ, [_segment(FIRST_SEQ - 1, flags=0x02, port=port)]
        for write in writes:
            mine.append(_segment(seq, write, port=port))
            seq += len(write)
        packets.append(mine)
    check = WireCheck(SINK_PORT, expected.get, every=every)
    result = _feed(check, [p for pair in zip(*packets, strict=True) for p in pair])
    # Then each is counted, and those checked pass with the envelope their body came after
    assert (result.messages, result.checked) == (8, len(range(0, 8, every)))
    assert result.problems == []


def test_bytes_that_never_came_or_a_connection_begun_before_are_reported(
    build_settings: Settings,
) -> None:
    messages, expected = _messages(build_settings, 3)
    stream = _stream(messages)
    half = len(stream) // 2
    check = WireCheck(SINK_PORT, expected.get, every=1)
    result = _feed(
        check,
        [
            _segment(FIRST_SEQ - 1, flags=0x02),
            _segment(FIRST_SEQ, stream[:1000]),
            _segment(FIRST_SEQ + half, stream[half:]),  # 1000 … half never came
            _segment(7, b"MAIL FROM:<x@y.example>\r\n", port=CLIENT + 1),  # no SYN seen
        ],
    )
    check._gaps()  # as finish() does: what still waits for bytes at the end
    assert f"bytes from port {CLIENT + 1}, a connection opened before" in result.problems[0]
    assert f"{half - 1000:,} bytes from port {CLIENT} never reached the check" in result.problems[1]
    assert result.messages < 3


def test_segments_that_overtake_others_wait_for_them_and_a_fin_for_the_last_byte(
    build_settings: Settings,
) -> None:
    # Given a connection's segments as lo may deliver them when two CPUs send parts of one
    # write: later parts first, the FIN before the last data, and data retransmitted after
    messages, expected = _messages(build_settings, 3)
    stream = _stream(messages)
    cuts = list(range(0, len(stream), 700))
    parts = [_segment(FIRST_SEQ + start, stream[start : start + 700]) for start in cuts[:-1]]
    last = _segment(FIRST_SEQ + cuts[-1], stream[cuts[-1] :], flags=0x19)  # data and FIN
    parts[3], parts[4], parts[5] = parts[5], parts[3], parts[4]
    packets = [_segment(FIRST_SEQ - 1, flags=0x02), *parts[:-1], last, parts[-1], last]
    check = WireCheck(SINK_PORT, expected.get, every=1)
    result = _feed(check, packets)
    check._gaps()
    # Then every message is counted and checked, nothing is reported, and the connection ends
    assert (result.messages, result.checked, result.problems) == (3, 3, [])
    assert check._connections == {}


@pytest.mark.parametrize("script", ["bench_campaign.py", "bench_policy.py"])
def test_without_cap_net_raw_the_benches_say_so_before_they_make_anything(script: str) -> None:
    # Given a process without CAP_NET_RAW (root, with it taken out of its bounding set)
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        _require_packet_socket()  # a skip on a laptop, a failure as root or in CI
        pytest.skip("needs root and util-linux's setpriv to take CAP_NET_RAW away")
    # When a bench starts with the check on
    done = subprocess.run(
        ["setpriv", "--bounding-set", "-net_raw", "--", sys.executable, f"scripts/{script}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it stops at once, saying what it needs and how to run without it
    assert done.returncode == 1
    assert f"{NEEDS_ROOT}\n" in done.stderr
    assert "--no-check" in NEEDS_ROOT
    assert done.stdout == ""  # nothing loaded, no database made


def test_dot_stuffing_is_undone() -> None:
    assert undo_dot_stuffing(b"..a\r\nb\r\n...c\r\n.d\r\n") == b".a\r\nb\r\n..c\r\nd\r\n"


def test_the_wire_count_must_equal_the_send_log_and_the_sink_counter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert CheckResult(messages=6, checked=1, segments=6).report(sent=6, sink_counted=6) is None
    assert "checked 1 of 6 messages in the run (1 in 1,000): all passed" in capsys.readouterr().out
    short = CheckResult(messages=5, checked=1)
    failure = short.report(sent=6, sink_counted=6)
    assert failure == "the check found 1 problem(s) in the messages sent (above)"
    assert "5 messages went to smtp-sink on the wire, the send log says 6 sent" in short.problems[0]
    assert "FAILED" in capsys.readouterr().out
