"""The bench's in-run check (tests/sink_dump.py) on real dumps written by Postfix's smtp-sink:
messages sent from many sessions at once come out whole and counted, and a broken message is
named with what is wrong with it."""

from __future__ import annotations

import smtplib
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from mailer.config import Settings
from tests.real_messages import build_with, promotion, unsubscribe_url
from tests.required_tools import require
from tests.sink_dump import BUFFER_SIZE, MARK, DumpResult, Expected, SinkDump, check_message
from tests.smtp_fixtures import SMTP_SINK, SmtpSink, start_smtp_sink

ROOT = Path(__file__).resolve().parent.parent
NAMES = [("Pat", "Example"), ("José", "Núñez"), ("Siobhán", "O'Brien"), ("Ana", "Li")]


@pytest.fixture
def build_settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "MAILER_VAR_DIR": str(tmp_path / "var"),
            "MAILER_SECRET_KEY": "sink-dump-test-secret-0123456789",
            "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
            "MAILER_PUBLIC_BASE_URL": "https://mail.cpi.example",  # RFC 8058 wants https
        },
        env_file=None,
    )


def _messages(settings: Settings, count: int) -> tuple[list[tuple[str, bytes]], dict]:
    """`count` real promotions to distinct recipients, and what each must say."""
    sent, expected = [], {}
    campaign = promotion(settings)  # compiled once, built per recipient
    for n in range(count):
        first, last = NAMES[n % len(NAMES)]
        address = f"contact{n}@org{n}.example"
        built = build_with(
            campaign,
            SimpleNamespace(id=n + 1, email=address),
            send_id=n + 1,
            first_name=first,
            last_name=last,
        )
        sent.append((address, built.data))
        expected[address] = Expected(f"{first} {last}", f"Hello {first},")
    return sent, expected


def _send(sink: SmtpSink, messages: list[tuple[str, bytes]], sessions: int) -> None:
    """Send from `sessions` SMTP sessions at once, each its share of `messages`."""
    errors: list[BaseException] = []

    def session(share: list[tuple[str, bytes]]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as client:
                for address, data in share:
                    client.sendmail("bounces@cpi.example", [address], data)
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


def _through_sink(messages: list[tuple[str, bytes]], expected: dict, *, sessions: int):  # type: ignore[no-untyped-def]
    require(SMTP_SINK)
    with SinkDump(expected.get, every=1) as dump:
        sink = start_smtp_sink(*dump.sink_args)
        try:
            dump.start()
            _send(sink, messages, sessions)
            return dump.finish()
        finally:
            sink.process.kill()
            sink.process.wait()


def test_concurrent_sessions_never_interleave_and_every_message_checks(
    build_settings: Settings,
) -> None:
    messages, expected = _messages(build_settings, 240)
    assert min(len(data) for _, data in messages) > 4096  # more than one write each
    result = _through_sink(messages, expected, sessions=12)
    assert result.problems == []
    assert (result.messages, result.checked) == (240, 240)


def test_sampling_checks_one_in_every(build_settings: Settings) -> None:
    messages, expected = _messages(build_settings, 25)
    require(SMTP_SINK)
    with SinkDump(expected.get, every=10) as dump:
        sink = start_smtp_sink(*dump.sink_args)
        try:
            dump.start()
            _send(sink, messages, sessions=3)
            result = dump.finish()
        finally:
            sink.process.kill()
    assert (result.messages, result.checked, result.problems) == (25, 3, [])  # 1st, 11th, 21st


def test_messages_split_anywhere_across_reads_are_counted_and_checked(
    build_settings: Settings,
) -> None:
    # Given a dump as smtp-sink writes it, with one message larger than the reader's buffer
    messages, expected = _messages(build_settings, 7)
    records = [
        MARK + f"X-Rcpt-Args: <{address}>\n".encode() + data.replace(b"\r\n", b"\n") + b"\n"
        for address, data in messages
    ]
    records[3] = MARK + b"X-Padding: " + b"x" * (BUFFER_SIZE + 1000) + b"\n\nnot checked\n"
    stream = b"".join(records)
    # When it comes through the pipe in pieces cut anywhere, inside the marker too
    cuts = sorted(
        {1, 5, len(MARK) + 3, 4096, 9000, len(stream) - 2, *range(0, len(stream), 70_001)}
    )
    with SinkDump(expected.get, every=2) as dump:
        dump.start()
        with open(dump.path, "wb", buffering=0) as pipe:
            for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                pipe.write(stream[start:end])
        result = dump.finish()
    # Then every message is counted and every second one (0, 2, 4, 6) checked
    assert (result.messages, result.checked, result.problems) == (7, 4, [])


def test_a_broken_message_is_named_with_what_is_wrong(build_settings: Settings) -> None:
    messages, expected = _messages(build_settings, 5)
    (a0, good), (a1, m1), (a2, m2), (a3, m3), (a4, m4) = messages
    link = unsubscribe_url(SimpleNamespace(data=m2)).encode()  # type: ignore[arg-type]
    broken = [
        (a0, good),
        (a1, m1.replace(b"Hello Jos\xc3\xa9,", b"Hello there,")),  # the name is missing
        (a2, m2.replace(b"these emails: " + link, b"these emails: " + link[:-3] + b"xyz")),
        (a3, m3.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b"")),
        (a4, m4.replace(b"Hello Pat,", b"Hello Ana,", 1)),  # in the text part only
    ]
    result = _through_sink(broken, expected, sessions=2)
    assert (result.messages, result.checked) == (5, 5)
    problems = "\n".join(result.problems)
    ids = {address: _message_id(data) for address, data in messages}
    assert ids[a0] not in problems
    assert f"{ids[a1]}: the text body does not say 'Hello José,'" in problems
    assert f"{ids[a1]}: the HTML body does not say 'Hello José,'" in problems
    assert f"{ids[a2]}: the text body does not hold List-Unsubscribe's link" in problems
    assert f"{ids[a3]}: List-Unsubscribe-Post appears 0 times, not once" in problems
    assert f"{ids[a4]}: the text body does not say 'Hello Pat,'" in problems
    assert f"{ids[a4]}: the HTML body" not in problems
    assert len(result.problems) == 5


def test_a_message_to_someone_else_or_from_no_sink_is_caught(build_settings: Settings) -> None:
    messages, expected = _messages(build_settings, 1)
    address, data = messages[0]
    record = b"X-Rcpt-Args: <someone@else.example>\n" + data.replace(b"\r\n", b"\n")
    problems = check_message(record, expected.get)
    assert any("but the envelope recipient is someone@else.example" in p for p in problems)
    stranger = check_message(record, {}.get)
    assert any(f"{address} is not one of the run's contacts" in p for p in stranger)


def _message_id(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.startswith(b"Message-ID: "):
            return line[12:].decode()
    raise AssertionError("no Message-ID")


def test_the_dump_count_must_equal_the_send_log_and_the_sink_counter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert DumpResult(messages=6, checked=1).report(sent=6, sink_counted=6) is None
    assert "checked 1 of 6 messages in the run (1 in 1,000): all passed" in capsys.readouterr().out
    short = DumpResult(messages=5, checked=1)
    failure = short.report(sent=6, sink_counted=6)
    assert failure == "the check found 1 problem(s) in the messages sent (above)"
    assert "smtp-sink's dump holds 5 messages, the send log says 6 sent" in short.problems[0]
    assert "FAILED" in capsys.readouterr().out
