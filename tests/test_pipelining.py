"""The pipelining client: one write for MAIL+RCPT+DATA when offered, the same verdicts as
aiosmtplib, against aiosmtpd with PIPELINING advertised and against Postfix smtp-sink."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from mailer.config import Settings
from mailer.errors import TransientSendError
from mailer.outgoing import DeliveryResult, Outcome, ReplyKind
from mailer.transports import make_transport
from mailer.transports.pipelining import PipeliningConnection
from mailer.transports.relays import parse_relay
from tests.required_tools import require
from tests.smtp_fixtures import SMTP_SINK, SmtpSink, start_smtp_sink
from tests.smtpd import DROP, FaultServer
from tests.test_transports import message, send

EHLO_REPLY = b"250-strict.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


@pytest.fixture
def pipelining_settings(smtp_settings: Settings) -> Settings:
    return smtp_settings.with_(smtp_client="auto")


async def _strict_server(
    *, has_pipelining: bool, seen: list[bytes]
) -> tuple[asyncio.AbstractServer, int]:
    """A server that proves how the client writes: it answers MAIL only after reading DATA
    when it offers PIPELINING (a client waiting for the MAIL reply would hang), and records
    whatever arrived in one read otherwise."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 strict.test ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(EHLO_REPLY if has_pipelining else b"250-strict.test\r\n250 8BITMIME\r\n")
        if has_pipelining:
            seen.append(await reader.readuntil(b"DATA\r\n"))
            writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
            # The first body must come with the second envelope, before we answer the dot
            seen.append(await reader.readuntil(b"DATA\r\n"))
            writer.write(b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
        else:
            for reply in (b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n", b"354 go ahead\r\n"):
                line = await reader.readuntil(b"\r\n")
                await asyncio.sleep(0.05)  # anything pipelined would now be buffered too
                seen.append(line + reader._buffer)  # type: ignore[attr-defined]
                writer.write(reply)
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 Ok\r\n")
        await reader.readuntil(b"\r\n")  # QUIT
        writer.write(b"221 Bye\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("has_pipelining", [True, False])
def test_commands_go_out_together_and_each_body_carries_the_next_envelope_when_pipelining(
    has_pipelining: bool,
) -> None:
    seen: list[bytes] = []

    async def run() -> DeliveryResult:
        server, port = await _strict_server(has_pipelining=has_pipelining, seen=seen)
        relay = parse_relay(f"smtp://127.0.0.1:{port}?timeout_s=3")
        conn = await PipeliningConnection.open(relay, "mailer.test")
        assert conn.is_pipelining is has_pipelining
        if has_pipelining:
            results: list[DeliveryResult | None] = [None, None]
            batch = deque([(0, message(1, "a@x.test")), (1, message(2, "b@x.test"))])
            await conn.send_from(batch, results, budget=10)
            assert results[0] is not None
            result = results[0]
            assert results[1] is not None and results[1].outcome is Outcome.SENT
        else:
            result = await conn.send(message(1, "a@x.test"))
        await conn.quit()
        server.close()
        await server.wait_closed()
        return result

    assert asyncio.run(run()).outcome is Outcome.SENT
    if has_pipelining:
        assert seen == [
            b"MAIL FROM:<bounces@cpi.example>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n",
            message(1, "a@x.test").data
            + b".\r\nMAIL FROM:<bounces@cpi.example>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n",
        ]
    else:
        assert seen == [
            b"MAIL FROM:<bounces@cpi.example>\r\n",
            b"RCPT TO:<a@x.test>\r\n",
            b"DATA\r\n",
        ]


class _CountingConnection(PipeliningConnection):
    """Counts the transactions finished awaited (`_finish`) rather than driven."""

    awaited = 0

    async def _finish(self, *args: Any) -> Any:
        type(self).awaited += 1
        return await super()._finish(*args)


async def _scripted_server(
    data_replies: list[bytes], *, chunk: int
) -> tuple[asyncio.AbstractServer, int]:
    """Accepts every envelope; answers the end of each message's data with the next of
    `data_replies`. Every reply (EHLO's multi-line) goes in writes of `chunk` bytes, each
    drained before the next: replies cut anywhere, even inside the code."""
    replies = iter(data_replies)

    async def say(writer: asyncio.StreamWriter, reply: bytes) -> None:
        for n in range(0, len(reply), chunk):
            writer.write(reply[n : n + chunk])
            await writer.drain()
            await asyncio.sleep(0)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await say(writer, b"220 scripted.test ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        await say(writer, EHLO_REPLY)
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            while (line := await reader.readuntil(b"\r\n")) != b"QUIT\r\n":
                if line == b"DATA\r\n":
                    await say(writer, b"354 go ahead\r\n")
                    await reader.readuntil(b"\r\n.\r\n")
                    await say(writer, next(replies))
                else:
                    await say(writer, b"250 2.1.0 Ok\r\n")
            await say(writer, b"221 Bye\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _send_scripted(data_replies: list[bytes], chunk: int) -> list[DeliveryResult | None]:
    async def run() -> list[DeliveryResult | None]:
        server, port = await _scripted_server(data_replies, chunk=chunk)
        conn = await _CountingConnection.open(
            parse_relay(f"smtp://127.0.0.1:{port}?timeout_s=5"), "mailer.test"
        )
        assert conn.extensions == {"PIPELINING": "", "8BITMIME": ""}
        results: list[DeliveryResult | None] = [None] * len(data_replies)
        batch = deque((n, message(n + 1, f"r{n}@x.test")) for n in range(len(data_replies)))
        await conn.send_from(batch, results, budget=100)
        await conn.quit()
        await asyncio.sleep(0.05)  # the server's session sees the end of the connection
        server.close()
        await server.wait_closed()
        return results

    _CountingConnection.awaited = 0
    return asyncio.run(run())


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_replies_are_read_alike_however_the_server_cuts_them(chunk: int) -> None:
    results = _send_scripted([b"250 2.0.0 Ok: queued\r\n"] * 3, chunk)
    assert [(r.outcome, r.code, r.reply) for r in results if r is not None] == [
        (Outcome.SENT, 250, "2.0.0 Ok: queued")
    ] * 3


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_usual_transactions_are_driven_and_a_multiline_reply_at_the_end_is_read_whole(
    chunk: int,
) -> None:
    # Given a server whose replies to the end of data are one line, then several lines
    replies = [b"250 2.0.0 Ok\r\n", b"250-2.0.0 queued\r\n250-as\r\n250 ABC123\r\n"] * 3
    # When six messages go pipelined, the replies cut anywhere
    results = _send_scripted(replies, chunk)
    # Then each is sent, the multi-line reply's lines joined, and no transaction was awaited
    assert [(r.outcome, r.reply) for r in results if r is not None] == [
        (Outcome.SENT, "2.0.0 Ok"),
        (Outcome.SENT, "2.0.0 queued\nas\nABC123"),
    ] * 3
    assert _CountingConnection.awaited == 0


def test_a_garbled_reply_after_the_content_leaves_the_message_uncertain() -> None:
    # Given a server that answers the second message's data with something not SMTP
    results = _send_scripted([b"250 2.0.0 Ok\r\n", b"hello there\r\n", b"250 Ok\r\n"], 1000)
    # Then the first is sent, the second may have arrived (lost), the third waits for another
    # connection (its envelope went out with the second's content, unanswered)
    first, second, third = results
    assert first is not None and first.outcome is Outcome.SENT
    assert second is not None and second.kind is ReplyKind.LOST
    assert "not an SMTP reply: b'hello there\\r\\n'" in second.reply
    assert third is None


async def _send_two(
    session: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    *,
    timeout_s: float,
    observer: Any = None,
) -> tuple[list[DeliveryResult | None], list[int], float]:
    """Two messages pipelined to a server running `session` for the connection: their
    results, the send ids left waiting, and the seconds it took."""
    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = await PipeliningConnection.open(
        parse_relay(f"smtp://127.0.0.1:{port}?timeout_s={timeout_s}"), "mailer.test"
    )
    conn.observer = observer
    results: list[DeliveryResult | None] = [None, None]
    batch = deque((n, message(n + 1, f"r{n}@x.test")) for n in range(2))
    start = asyncio.get_running_loop().time()
    await conn.send_from(batch, results, budget=10)
    took = asyncio.get_running_loop().time() - start
    conn.abort()
    server.close()
    return results, [m.send_id for _, m in batch], took


async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 slow.test ESMTP\r\n")
    await reader.readuntil(b"\r\n")  # EHLO
    writer.write(EHLO_REPLY)
    await reader.readuntil(b"DATA\r\n")


def test_a_transaction_handed_to_the_awaited_path_keeps_its_deadline() -> None:
    # Given a server that answers the envelope after 0.7 s with a multi-line 354 (which the
    # driven path hands over) and the end of data 0.7 s later, with a timeout of 1 s
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            await _greet(reader, writer)
            await asyncio.sleep(0.7)
            writer.write(b"250 ok\r\n250 ok\r\n354-go\r\n354 ahead\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            await asyncio.sleep(0.7)
            writer.write(b"250 queued\r\n")
            await reader.read()

    results, left, took = asyncio.run(_send_two(session, timeout_s=1))
    # Then the transaction times out 1 s after it began, as one awaited from the start would
    first = results[0]
    assert first is not None and first.kind is ReplyKind.LOST
    assert "after the message went out: timed out" in first.reply
    assert took < 1.3
    assert left == [2]  # its follower's envelope went out with it, unanswered


def test_a_reply_after_the_content_that_never_ends_is_refused_at_its_size() -> None:
    # Given a server that begins a multi-line reply to the end of data and never ends it
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            await _greet(reader, writer)
            writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
            await reader.readuntil(b"\r\n.\r\n")
            writer.write(b"250-ok\r\n" + b"x" * 70_000)
            await reader.read()

    results, _, took = asyncio.run(_send_two(session, timeout_s=5))
    # Then the message is uncertain as soon as the reply passes 64 KiB, not at the timeout
    first = results[0]
    assert first is not None and first.kind is ReplyKind.LOST
    assert "no line end in" in first.reply
    assert took < 2


def test_a_journal_that_cannot_note_an_attempt_defers_the_message_and_keeps_the_next() -> None:
    class FullDisk:
        def attempting(self, send_id: int) -> None:
            raise OSError(28, "No space left on device")

        def answered(self, send_id: int, is_accepted: bool) -> None:
            pass

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            await _greet(reader, writer)
            writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
            await reader.read()

    results, left, _ = asyncio.run(_send_two(session, timeout_s=5, observer=FullDisk()))
    # Then the message never went out: deferred as a connection problem, never uncertain,
    # and the next one (its envelope written, unanswered) waits for another connection
    first = results[0]
    assert first is not None and first.kind is ReplyKind.CONNECTION
    assert "No space left on device" in first.reply
    assert results[1] is None and left == [2]


@pytest.mark.parametrize(
    ("after_ehlo", "problem"),
    [
        # RFC 3207 §4.2 / CVE-2011-0411's kind: plaintext sent after "220" must not be read
        # as if it had come over TLS
        (b"220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n", "a response injection"),
        (b"2" * 70_000, "no line end in"),
    ],
)
def test_a_server_that_breaks_the_protocol_before_tls_gets_no_session(
    after_ehlo: bytes, problem: str
) -> None:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 evil.test ESMTP\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-evil.test\r\n250 STARTTLS\r\n")
        await reader.readuntil(b"\r\n")  # STARTTLS
        writer.write(after_ehlo)
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.read()
        writer.close()

    async def run() -> str:
        server = await asyncio.start_server(session, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await PipeliningConnection.open(
                parse_relay(f"smtp://127.0.0.1:{port}?starttls=1&timeout_s=5"), "mailer.test"
            )
        except TransientSendError as exc:
            return str(exc)
        finally:
            server.close()
            await server.wait_closed()
        raise AssertionError("the session opened")

    reason = asyncio.run(run())
    assert reason.startswith("cannot connect to 127.0.0.1:")
    assert problem in reason


@pytest.fixture
def pipelining_server(make_smtp_server: Callable[..., FaultServer]) -> FaultServer:
    return make_smtp_server(has_pipelining=True)


@pytest.mark.parametrize(
    ("stage", "reply", "outcome", "kind"),
    [
        ("rcpt", "550 5.1.1 no such user", Outcome.FAILED, ReplyKind.HARD),
        ("rcpt", "451 4.7.1 greylisted", Outcome.DEFERRED, ReplyKind.RATE),
        ("rcpt", "452 4.5.3 too many recipients", Outcome.DEFERRED, ReplyKind.SOFT),
        ("rcpt", "421 4.7.0 closing", Outcome.DEFERRED, ReplyKind.RATE),
        ("rcpt", DROP, Outcome.DEFERRED, ReplyKind.CONNECTION),
        ("mail", "421 4.3.2 shutting down", Outcome.DEFERRED, ReplyKind.RATE),
        ("mail", "550 5.7.1 sender blocked", Outcome.FAILED, ReplyKind.POLICY),
        ("data", "554 5.7.1 spam", Outcome.FAILED, ReplyKind.POLICY),
        ("data", "421 4.7.28 rate limited", Outcome.DEFERRED, ReplyKind.RATE),
        ("data", DROP, Outcome.DEFERRED, ReplyKind.LOST),  # after the content: uncertain
    ],
)
def test_pipelined_refusals_leave_the_session_usable_for_the_next_message(
    pipelining_settings: Settings,
    pipelining_server: FaultServer,
    stage: str,
    reply: str,
    outcome: Outcome,
    kind: ReplyKind,
) -> None:
    # Given a pipelining server that refuses the third message at one stage
    messages = [message(i, f"r{i}@x.test") for i in range(6)]
    victim = messages[2]
    if stage == "rcpt":
        pipelining_server.on_rcpt(victim.rcpt, reply)
    elif stage == "data":
        pipelining_server.on_data(victim.rcpt, reply)
    # When the batch goes over one connection
    settings = pipelining_settings.with_(smtp_pool_size=1, smtp_url=pipelining_server.url)
    if stage == "mail":  # the server scripts "the next MAIL", so send the first two before
        results = send(settings, messages[:2])
        pipelining_server.on_mail(reply)
        results += send(settings, messages[2:])
    else:
        results = send(settings, messages)
    # Then only the victim is refused, with the same verdict aiosmtplib gives
    assert (results[2].outcome, results[2].kind) == (outcome, kind)
    assert [r.outcome for i, r in enumerate(results) if i != 2] == [Outcome.SENT] * 5
    assert sorted(m.rcpt_tos[0] for m in pipelining_server.messages) == sorted(
        m.rcpt for m in messages if m is not victim
    )


def test_pipelined_smtputf8_message_arrives_byte_for_byte(
    pipelining_settings: Settings, pipelining_server: FaultServer
) -> None:
    data = (
        "From: Zoë <news@cpi.example>\r\nSubject: x\r\n\r\n.leading dot\r\nGrüße\r\n"
        + "é" * 400
        + "\r\n.\r\n"
    ).encode()
    settings = pipelining_settings.with_(smtp_url=pipelining_server.url)
    results = send(settings, [message(1, "zoë@exämple.test", data, needs_smtputf8=True)])
    assert results[0].outcome is Outcome.SENT
    [received] = pipelining_server.messages
    assert received.data == data
    assert "SMTPUTF8" in received.mail_options


# --- against Postfix smtp-sink (it advertises PIPELINING) ----------------------------------


@pytest.mark.parametrize("client", ["auto", "aiosmtplib"])
def test_both_clients_deliver_a_thousand_messages_into_smtp_sink(
    smtp_sink: SmtpSink, smtp_settings: Settings, client: str
) -> None:
    settings = smtp_settings.with_(smtp_client=client, smtp_url=smtp_sink.url, smtp_pool_size=8)
    results = send(settings, [message(i, f"r{i}@x.test") for i in range(1000)])
    assert [r.send_id for r in results] == list(range(1000))
    assert {(r.outcome, r.code) for r in results} == {(Outcome.SENT, 250)}


def _sink(*options: str) -> SmtpSink:
    require(SMTP_SINK)
    return start_smtp_sink(*options)


@pytest.mark.parametrize(
    ("options", "outcome", "kind", "code"),
    [
        (("-Q", "RCPT"), Outcome.DEFERRED, ReplyKind.RATE, 421),
        (("-q", "DATA"), Outcome.DEFERRED, ReplyKind.CONNECTION, None),
        (("-Q", "."), Outcome.DEFERRED, ReplyKind.RATE, 421),
        # smtp-sink refuses with "500 5.5.2 Error: command failed": a protocol error, ours
        (("-f", "RCPT"), Outcome.FAILED, ReplyKind.POLICY, 500),
        (("-r", "RCPT"), Outcome.DEFERRED, ReplyKind.SOFT, 450),
    ],
)
def test_smtp_sink_refusals_are_judged_like_any_other_server(
    smtp_settings: Settings,
    options: tuple[str, ...],
    outcome: Outcome,
    kind: ReplyKind,
    code: int | None,
) -> None:
    sink = _sink(*options)
    try:
        settings = smtp_settings.with_(smtp_url=sink.url + "?timeout_s=3", smtp_pool_size=2)
        results = send(settings, [message(i, f"r{i}@x.test") for i in range(4)])
    finally:
        sink.process.kill()
        sink.process.wait()
    assert {(r.outcome, r.kind, r.code) for r in results} == {(outcome, kind, code)}


def test_smtp_sink_receives_the_bytes_as_given(smtp_settings: Settings) -> None:
    # smtp-sink writes as nobody when the tests run as root: pytest's tmp_path is closed to it
    dump = Path(tempfile.mkdtemp(prefix="mailer-sink-"))
    os.chmod(dump, 0o777)
    sink = _sink("-d", f"{dump}/%M.")
    data = b"Subject: dots\r\n\r\n.one\r\n..two\r\nmiddle . dot\r\n" + b"y" * 998 + b"\r\n.\r\n"
    try:
        settings = smtp_settings.with_(smtp_url=sink.url, smtp_pool_size=1)
        assert send(settings, [message(1, "a@x.test", data)])[0].outcome is Outcome.SENT
    finally:
        sink.process.kill()
        sink.process.wait()
    [dumped] = [p.read_bytes() for p in dump.iterdir()]
    shutil.rmtree(dump)
    # smtp-sink stores LF line ends, its own trace headers above and a blank line below
    assert dumped.endswith(data.replace(b"\r\n", b"\n") + b"\n")


def test_a_pipelined_refusal_stands_when_the_line_drops_during_the_reset(
    pipelining_settings: Settings, pipelining_server: FaultServer
) -> None:
    pipelining_server.on_rcpt("gone@x.test", "550 5.1.1 no such user")
    pipelining_server.on_rset(DROP)
    settings = pipelining_settings.with_(smtp_pool_size=1, smtp_url=pipelining_server.url)
    messages = [message(1, "a@x.test"), message(2, "gone@x.test"), message(3, "b@x.test")]
    results = send(settings, messages)
    assert [(r.outcome, r.kind) for r in results] == [
        (Outcome.SENT, ReplyKind.OK),
        (Outcome.FAILED, ReplyKind.HARD),
        (Outcome.SENT, ReplyKind.OK),
    ]


async def _slow_server(reply_delay_s: float) -> tuple[asyncio.AbstractServer, int, list[int]]:
    """A server with PIPELINING that answers every command and every message, each after
    `reply_delay_s`; the list counts its sessions."""
    sessions: list[int] = []

    async def answer(writer: asyncio.StreamWriter, reply: bytes) -> None:
        await asyncio.sleep(reply_delay_s)
        writer.write(reply)

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions.append(1)
        writer.write(b"220 slow.test ESMTP\r\n")
        with suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                line = await reader.readuntil(b"\r\n")
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(EHLO_REPLY)
                elif verb == b"DATA":
                    await answer(writer, b"354 go ahead\r\n")
                    await reader.readuntil(b"\r\n.\r\n")
                    await answer(writer, b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 Bye\r\n")
                    break
                else:
                    await answer(writer, b"250 2.1.0 Ok\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], sessions


def test_the_timeout_counts_per_transaction_and_never_while_a_connection_waits_idle(
    pipelining_settings: Settings,
) -> None:
    # Given a server that takes ~0.2 s per transaction and a timeout of 0.8 s: six messages
    # on one connection take longer than the timeout, none of them alone does
    async def run() -> tuple[list[DeliveryResult], list[DeliveryResult], int]:
        server, port, sessions = await _slow_server(0.05)
        settings = pipelining_settings.with_(smtp_pool_size=1)
        transport = make_transport(settings, f"smtp://127.0.0.1:{port}?timeout_s=0.8")
        await transport.open()
        first = await transport.send_batch([message(i, f"r{i}@x.test") for i in range(6)])
        # idle for longer than the timeout, shorter than the pool's idle check (no NOOP)
        await asyncio.sleep(0.9)
        second = await transport.send_batch([message(9, "r9@x.test")])
        await transport.close()
        server.close()
        return first, second, len(sessions)

    first, second, sessions = asyncio.run(run())
    # Then every message went out, on the one connection, which the idle time did not cut
    assert [r.outcome for r in first + second] == [Outcome.SENT] * 7, first + second
    assert sessions == 1
