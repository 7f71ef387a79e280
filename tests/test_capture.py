"""The embedded capture server: capture:// sends land in a Maildir under var_dir."""

from __future__ import annotations

import asyncio
import mailbox
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.outgoing import Outcome
from mailer.transports import CaptureServer, make_transport
from mailer.transports.capture import URL_FILE, capture_url, maildir_path
from mailer.transports.pipelining import PipeliningConnection
from mailer.transports.relays import parse_relay
from tests.test_transports import message, send


@pytest.fixture
def capture_settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path / "var", smtp_url="capture://", smtp_pool_size=2)


def test_capture_url_sends_into_the_maildir(capture_settings: Settings) -> None:
    # Given a started capture server
    with CaptureServer(capture_settings) as server:
        assert server.url.startswith("smtp://127.0.0.1:")
        assert capture_url(capture_settings) == server.url
        # When three messages are sent to capture://
        messages = [message(i, f"r{i}@client.test") for i in range(3)]
        results = send(capture_settings, messages)
        assert {r.outcome for r in results} == {Outcome.SENT}
        assert server.captured_count == 3
    # Then the Maildir holds each, with its envelope on top of the bytes sent
    box = mailbox.Maildir(maildir_path(capture_settings), create=False)
    parsed = {
        m["Delivered-To"]: BytesParser(policy=policy.default).parsebytes(m.as_bytes()) for m in box
    }
    assert sorted(parsed) == ["r0@client.test", "r1@client.test", "r2@client.test"]
    assert parsed["r1@client.test"]["Return-Path"] == "<bounces@cpi.example>"
    assert parsed["r1@client.test"]["Subject"] == "m1"
    # And stopping forgets the URL, so capture:// no longer resolves
    assert not (capture_settings.var_dir / URL_FILE).exists()
    with pytest.raises(ConfigError, match="no capture server is running"):
        make_transport(capture_settings)


def test_the_captured_file_keeps_the_exact_bytes(capture_settings: Settings) -> None:
    data = "Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n.dot first\r\nGrüße\r\n".encode()
    with CaptureServer(capture_settings):
        results = send(capture_settings, [message(1, "josé@café.test", data, needs_smtputf8=True)])
    assert results[0].outcome is Outcome.SENT
    [path] = (maildir_path(capture_settings) / "new").iterdir()
    raw = path.read_bytes()
    head = "Return-Path: <bounces@cpi.example>\r\nDelivered-To: josé@café.test\r\n".encode()
    assert raw.replace(b"\r\n", b"\n") == (head + data).replace(b"\r\n", b"\n")


def test_the_capture_server_listens_on_loopback_only(capture_settings: Settings) -> None:
    server = CaptureServer(capture_settings)
    try:
        url = server.start()
        assert url.startswith("smtp://127.0.0.1:")
        assert server.start() == url  # starting twice is harmless
    finally:
        server.stop()
    server.stop()  # and so is stopping twice


def test_the_capture_server_offers_pipelining_and_smtputf8(capture_settings: Settings) -> None:
    async def extensions() -> dict[str, str]:
        relay = parse_relay(capture_url(capture_settings))
        conn = await PipeliningConnection.open(relay, "mailer.test")
        await conn.quit()
        return conn.extensions

    with CaptureServer(capture_settings):
        offered = asyncio.run(extensions())
    assert {"PIPELINING", "SMTPUTF8"} <= set(offered)
