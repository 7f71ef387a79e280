"""The SMTP transports against a real (fault-injecting) aiosmtpd server, both clients alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from email import message_from_bytes, policy
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage, ReplyKind
from mailer.transports import Transport, make_transport
from mailer.transports.base import (
    NO_SMTPUTF8,
    classify,
    dot_stuff,
    enhanced_code,
    result_from_reply,
)
from mailer.transports.pool import IDLE_CHECK_AFTER_S
from mailer.transports.relays import parse_relay, parse_relays, rate_limit_name
from tests.real_messages import build_promotion
from tests.smtp_fixtures import TlsFiles
from tests.smtpd import DROP, HANG, FaultServer

CLIENTS = ["auto", "aiosmtplib"]
ROOT = Path(__file__).resolve().parent.parent


def message(send_id: int, rcpt: str, data: bytes | None = None, **kw: object) -> OutgoingMessage:
    body = data if data is not None else f"Subject: m{send_id}\r\n\r\nhello {send_id}\r\n".encode()
    return OutgoingMessage(
        send_id=send_id,
        mail_from=str(kw.pop("mail_from", "bounces@cpi.example")),
        rcpt=rcpt,
        data=body,
        message_id=f"<m{send_id}@cpi.example>",
        **kw,  # type: ignore[arg-type]
    )


def send(
    settings: Settings, messages: Sequence[OutgoingMessage], url: str | None = None
) -> list[DeliveryResult]:
    async def run() -> list[DeliveryResult]:
        transport = make_transport(settings, url)
        await transport.open()
        try:
            return await transport.send_batch(messages)
        finally:
            await transport.close()

    return asyncio.run(run())


#: Each test taking `client_settings` runs with each client, and the pipelining client both
#: with and without PIPELINING offered by `smtp_server`.
VARIANTS = {
    "pipelined": ("auto", True),
    "unpipelined": ("auto", False),
    "aiosmtplib": ("aiosmtplib", False),
}


@pytest.fixture(params=list(VARIANTS))
def client_settings(
    request: pytest.FixtureRequest, smtp_settings: Settings, smtp_server: FaultServer
) -> Settings:
    client, smtp_server.has_pipelining = VARIANTS[request.param]
    return smtp_settings.with_(smtp_client=client)


# --- reply classification, table-driven (docs/standards.md §6) ----------------------------

CLASSIFY_CASES = [
    (250, "2.0.0", ReplyKind.OK, Outcome.SENT),
    (251, "", ReplyKind.OK, Outcome.SENT),
    (421, "", ReplyKind.RATE, Outcome.DEFERRED),
    (421, "4.7.28", ReplyKind.RATE, Outcome.DEFERRED),
    (451, "4.7.1", ReplyKind.RATE, Outcome.DEFERRED),
    (450, "4.2.0", ReplyKind.SOFT, Outcome.DEFERRED),
    (451, "4.3.0", ReplyKind.SOFT, Outcome.DEFERRED),
    (452, "4.5.3", ReplyKind.SOFT, Outcome.DEFERRED),
    (452, "4.2.2", ReplyKind.SOFT, Outcome.DEFERRED),
    (450, "", ReplyKind.SOFT, Outcome.DEFERRED),
    (550, "5.1.1", ReplyKind.HARD, Outcome.FAILED),
    (553, "5.1.3", ReplyKind.HARD, Outcome.FAILED),
    (550, "5.2.1", ReplyKind.HARD, Outcome.FAILED),
    (552, "5.2.2", ReplyKind.SOFT, Outcome.FAILED),
    (552, "5.2.3", ReplyKind.POLICY, Outcome.FAILED),
    (550, "5.4.1", ReplyKind.HARD, Outcome.FAILED),
    (554, "5.7.1", ReplyKind.POLICY, Outcome.FAILED),
    (550, "5.7.26", ReplyKind.POLICY, Outcome.FAILED),
    (554, "5.6.0", ReplyKind.POLICY, Outcome.FAILED),
    (500, "5.5.2", ReplyKind.POLICY, Outcome.FAILED),
    (550, "", ReplyKind.HARD, Outcome.FAILED),
    (552, "", ReplyKind.SOFT, Outcome.FAILED),
    (554, "", ReplyKind.POLICY, Outcome.FAILED),
    # An enhanced code of the wrong class is ignored: judged by the code alone.
    (550, "4.7.1", ReplyKind.HARD, Outcome.FAILED),
    (354, "", ReplyKind.SOFT, Outcome.DEFERRED),
]


@pytest.mark.parametrize(("code", "enhanced", "kind", "outcome"), CLASSIFY_CASES)
def test_reply_codes_are_classified_by_the_table(
    code: int, enhanced: str, kind: ReplyKind, outcome: Outcome
) -> None:
    assert classify(code, enhanced) is kind
    result = result_from_reply(7, code, f"{enhanced} words".strip())
    assert (result.kind, result.outcome) == (kind, outcome)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "5.1.1 <a@b> no such user", "5.1.1"),
        (451, "4.7.1 greylisted", "4.7.1"),
        (550, "no enhanced code here", ""),
        (550, "4.1.1 wrong class", ""),
        (421, "4.7.28 rate limited", "4.7.28"),
        (250, "2.0.0", "2.0.0"),
        (550, "5.1.1.2 not a code", ""),
    ],
)
def test_enhanced_codes_are_read_from_the_start_of_the_reply(
    code: int, text: str, expected: str
) -> None:
    assert enhanced_code(code, text) == expected


def test_a_refused_sender_is_never_blamed_on_the_recipient() -> None:
    result = result_from_reply(1, 553, "5.1.8 bad sender domain", is_sender=True)
    assert (result.outcome, result.kind) == (Outcome.FAILED, ReplyKind.POLICY)


def test_dot_stuffing_doubles_leading_dots_and_ends_with_a_lone_dot() -> None:
    assert dot_stuff(b".a\r\n.b\r\nc.\r\n") == b"..a\r\n..b\r\nc.\r\n.\r\n"
    assert dot_stuff(b"no final newline") == b"no final newline\r\n.\r\n"


# --- relay URLs -----------------------------------------------------------------------------


def test_smtp_urls_give_host_port_tls_and_credentials() -> None:
    relay = parse_relay("smtp://us%40er:p%3Ass@mail.example:2525?starttls=1&timeout_s=7.5")
    assert (relay.host, relay.port, relay.starttls, relay.timeout_s) == (
        "mail.example",
        2525,
        True,
        7.5,
    )
    assert (relay.username, relay.password) == ("us@er", "p:ss")
    assert "p:ss" not in repr(relay)
    secure = parse_relay("smtps://mail.example")
    assert (secure.port, secure.is_implicit_tls, secure.starttls) == (465, True, None)
    assert [r.port for r in parse_relays("smtp://a:1, smtp://b:2")] == [1, 2]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://x", "unknown scheme 'http'"),
        ("smtp://", "has no host"),
        ("smtp://x:port", "port is not a number"),
        ("smtp://x?starttls=maybe", "starttls='maybe'"),
        ("smtp://x?tls=1", "unknown parameter 'tls'"),
        ("smtps://x?starttls=1", "already TLS"),
        ("smtp://u:secret@x?bogus=1", "u:****@x"),
    ],
)
def test_bad_smtp_urls_are_refused_with_the_fix(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_relays(url)
    assert fragment in str(info.value)
    assert "secret" not in str(info.value)


def test_an_unknown_client_name_is_refused(smtp_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="MAILER_SMTP_CLIENT='fast'"):
        make_transport(smtp_settings.with_(smtp_client="fast"))


@pytest.mark.parametrize("name", ["", "mail host", "mailér.example"])
def test_a_local_hostname_that_cannot_go_into_ehlo_is_refused(
    smtp_settings: Settings, name: str
) -> None:
    with pytest.raises(ConfigError, match="MAILER_SMTP_LOCAL_HOSTNAME"):
        make_transport(smtp_settings.with_(smtp_local_hostname=name))


@pytest.mark.parametrize("client", CLIENTS)
def test_make_transport_gives_a_transport(smtp_settings: Settings, client: str) -> None:
    assert isinstance(make_transport(smtp_settings.with_(smtp_client=client)), Transport)


# --- sending ------------------------------------------------------------------------------


def test_every_message_is_sent_in_order_with_its_envelope(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    messages = [message(i, f"r{i}@client.test") for i in range(20)]
    results = send(client_settings, messages)
    assert [r.send_id for r in results] == list(range(20))
    assert {(r.outcome, r.kind, r.code) for r in results} == {(Outcome.SENT, ReplyKind.OK, 250)}
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert sorted(received) == sorted(m.rcpt for m in messages)
    assert received["r3@client.test"].data == messages[3].data
    assert received["r3@client.test"].mail_from == "bounces@cpi.example"
    assert set(smtp_server.ehlo_names) == {"mailer.test"}


@pytest.mark.parametrize(
    ("stage", "reply", "outcome", "kind"),
    [
        ("rcpt", "550 5.1.1 no such user", Outcome.FAILED, ReplyKind.HARD),
        ("rcpt", "451 4.7.1 greylisted, come back later", Outcome.DEFERRED, ReplyKind.RATE),
        ("rcpt", "452 4.5.3 too many recipients", Outcome.DEFERRED, ReplyKind.SOFT),
        ("rcpt", "421 4.7.0 too fast, closing", Outcome.DEFERRED, ReplyKind.RATE),
        ("data", "554 5.7.1 message refused as spam", Outcome.FAILED, ReplyKind.POLICY),
        ("data", "451 4.3.0 local trouble", Outcome.DEFERRED, ReplyKind.SOFT),
        ("data", "421 4.7.28 rate limited", Outcome.DEFERRED, ReplyKind.RATE),
        ("data", "552 5.2.2 mailbox full", Outcome.FAILED, ReplyKind.SOFT),
    ],
)
def test_a_refusal_touches_only_its_own_message(
    client_settings: Settings,
    smtp_server: FaultServer,
    stage: str,
    reply: str,
    outcome: Outcome,
    kind: ReplyKind,
) -> None:
    # Given one recipient the server refuses, among others it accepts, on a single connection
    settings = client_settings.with_(smtp_pool_size=1)
    script = smtp_server.on_rcpt if stage == "rcpt" else smtp_server.on_data
    script("victim@client.test", reply)
    messages = [message(i, f"r{i}@client.test") for i in range(6)]
    messages[2] = message(2, "victim@client.test")
    # When the batch is sent
    results = send(settings, messages)
    # Then the victim gets the reply's verdict and everyone else is delivered
    code, _, text = reply.partition(" ")
    victim = results[2]
    assert (victim.outcome, victim.kind, victim.code) == (outcome, kind, int(code))
    assert victim.enhanced == text.split()[0]
    assert victim.reply == text
    assert all(r.outcome is Outcome.SENT for i, r in enumerate(results) if i != 2)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == sorted(
        m.rcpt for i, m in enumerate(messages) if i != 2
    )
    # A 421 closes the connection: the rest went over a new one
    assert smtp_server.connection_count == (2 if code == "421" else 1)


def test_a_refused_sender_fails_as_policy_and_the_session_goes_on(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.on_mail("553 5.1.8 sender domain does not exist")
    results = send(
        client_settings.with_(smtp_pool_size=1), [message(1, "a@x.test"), message(2, "b@x.test")]
    )
    assert (results[0].outcome, results[0].kind) == (Outcome.FAILED, ReplyKind.POLICY)
    assert results[1].outcome is Outcome.SENT


def test_a_refusal_stands_when_the_line_drops_during_the_reset_after_it(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.on_rcpt("gone@x.test", "550 5.1.1 no such user")
    smtp_server.on_rset(DROP)
    messages = [message(1, "gone@x.test"), message(2, "a@x.test"), message(3, "b@x.test")]
    results = send(client_settings.with_(smtp_pool_size=1), messages)
    assert (results[0].outcome, results[0].kind) == (Outcome.FAILED, ReplyKind.HARD)
    assert [r.outcome for r in results[1:]] == [Outcome.SENT, Outcome.SENT]


def test_a_connection_dropped_after_the_content_leaves_only_that_message_uncertain(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    # the server has the whole message when it hangs up: it may have delivered it (RFC 1047)
    smtp_server.on_data("dropped@x.test", DROP)
    messages = [message(i, f"r{i}@x.test") for i in range(5)] + [message(5, "dropped@x.test")]
    results = send(client_settings.with_(smtp_pool_size=1), messages)
    assert (results[5].outcome, results[5].kind, results[5].code) == (
        Outcome.DEFERRED,
        ReplyKind.LOST,
        None,
    )
    assert "may have been delivered" in results[5].reply
    assert all(r.outcome is Outcome.SENT for r in results[:5])


def test_a_connection_dropped_before_the_content_defers_that_message_as_not_sent(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.on_rcpt("dropped@x.test", DROP)
    messages = [message(1, "dropped@x.test"), message(2, "a@x.test")]
    results = send(client_settings.with_(smtp_pool_size=1), messages)
    assert (results[0].outcome, results[0].kind) == (Outcome.DEFERRED, ReplyKind.CONNECTION)
    assert "lost" in results[0].reply
    assert results[1].outcome is Outcome.SENT


def test_a_server_that_is_down_defers_everything_quickly_and_then_takes_it_all(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    messages = [message(i, f"r{i}@x.test") for i in range(30)]
    with smtp_server.down():
        started = time.monotonic()
        results = send(client_settings, messages)
        elapsed_s = time.monotonic() - started
    assert {(r.outcome, r.kind) for r in results} == {(Outcome.DEFERRED, ReplyKind.CONNECTION)}
    assert f"cannot connect to 127.0.0.1:{smtp_server.port}" in results[0].reply
    assert elapsed_s < 5
    # And once it is back, the same messages go through
    assert {r.outcome for r in send(client_settings, messages)} == {Outcome.SENT}
    assert len(smtp_server.messages) == 30


def test_connections_cut_before_the_greeting_are_retried(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.refuse_connections(2)
    results = send(client_settings.with_(smtp_pool_size=1), [message(1, "a@x.test")])
    assert results[0].outcome is Outcome.SENT
    assert smtp_server.connection_count == 3


def test_a_connection_is_replaced_after_its_message_cap(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    settings = client_settings.with_(smtp_pool_size=1, smtp_max_messages_per_connection=3)
    results = send(settings, [message(i, f"r{i}@x.test") for i in range(10)])
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert smtp_server.connection_count == 4


def test_connections_stay_open_between_batches(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    async def run() -> None:
        transport = make_transport(client_settings.with_(smtp_pool_size=2))
        await transport.open()
        for batch in range(3):
            msgs = [message(batch * 10 + i, f"r{i}@x.test") for i in range(4)]
            assert {r.outcome for r in await transport.send_batch(msgs)} == {Outcome.SENT}
        await transport.close()

    asyncio.run(run())
    assert smtp_server.connection_count == 2
    assert len(smtp_server.messages) == 12


def test_a_connection_the_server_dropped_while_idle_costs_no_message(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    async def run() -> list[DeliveryResult]:
        transport = make_transport(client_settings.with_(smtp_pool_size=2))
        first = await transport.send_batch([message(i, f"r{i}@x.test") for i in range(4)])
        assert {r.outcome for r in first} == {Outcome.SENT}
        # Given the server hangs up on the idle connections (a restart does)
        smtp_server.stop()
        smtp_server.start()
        await asyncio.sleep(IDLE_CHECK_AFTER_S + 0.1)
        # When the next batch comes, the dead connections are noticed before use
        second = await transport.send_batch([message(i, f"s{i}@x.test") for i in range(4)])
        await transport.close()
        return second

    assert {r.outcome for r in asyncio.run(run())} == {Outcome.SENT}
    assert len(smtp_server.messages) == 8


def test_a_transport_used_from_a_new_event_loop_reconnects(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    transport = make_transport(client_settings.with_(smtp_pool_size=1))
    for i in range(2):
        results = asyncio.run(transport.send_batch([message(i, "a@x.test")]))
        assert results[0].outcome is Outcome.SENT
    asyncio.run(transport.close())
    assert smtp_server.connection_count == 2


def test_several_relays_share_the_connections(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer]
) -> None:
    first, second = make_smtp_server(), make_smtp_server()
    url = f"{first.url},{second.url}"
    results = send(client_settings, [message(i, f"r{i}@x.test") for i in range(20)], url)
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(first.messages) + len(second.messages) == 20
    assert first.messages and second.messages


def test_a_relay_that_is_down_is_skipped_for_one_that_answers(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer]
) -> None:
    up, down = make_smtp_server(), make_smtp_server()
    down.stop()
    results = send(
        client_settings, [message(i, f"r{i}@x.test") for i in range(10)], f"{down.url},{up.url}"
    )
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(up.messages) == 10


# --- SMTPUTF8 and exact bytes ---------------------------------------------------------------

UTF8_DATA = (
    "From: Zoë <news@cpi.example>\r\nTo: José <josé@bücher.test>\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße, José — ça va?\r\n.\r\n..two dots\r\n"
).encode()


def test_a_non_ascii_address_fails_as_unsupported_without_smtputf8(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer]
) -> None:
    server = make_smtp_server(has_smtputf8=False)
    messages = [
        message(1, "josé@bücher.test", UTF8_DATA, needs_smtputf8=True),
        message(2, "plain@x.test"),
    ]
    results = send(client_settings, messages, server.url)
    assert (results[0].outcome, results[0].kind, results[0].reply) == (
        Outcome.FAILED,
        ReplyKind.UNSUPPORTED,
        NO_SMTPUTF8,
    )
    assert results[1].outcome is Outcome.SENT
    assert [m.rcpt_tos for m in server.messages] == [["plain@x.test"]]


def test_a_non_ascii_address_is_sent_with_smtputf8_and_8bitmime(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    results = send(
        client_settings, [message(1, "josé@bücher.test", UTF8_DATA, needs_smtputf8=True)]
    )
    assert results[0].outcome is Outcome.SENT
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["josé@bücher.test"]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(received.mail_options)
    assert received.data == UTF8_DATA


@pytest.mark.parametrize("has_8bitmime", [True, False])
def test_8bit_bodies_go_as_they_are_with_8bitmime_and_quoted_printable_without(
    client_settings: Settings, smtp_server: FaultServer, has_8bitmime: bool
) -> None:
    # Given a built message whose bodies are 8bit (the recipient's name is not ASCII)
    smtp_server.has_8bitmime = has_8bitmime
    built = build_promotion(
        client_settings.with_(templates_dir=ROOT / "templates"),
        SimpleNamespace(id=3, email="pat@client.example"),
        send_id=7,
        first_name="José",
    )
    original = built.data
    assert b"Content-Transfer-Encoding: 8bit" in original and built.downgrade is not None
    # When it goes to a server that offers 8BITMIME, or to one that does not
    [result] = send(client_settings, [built])
    # Then the first gets the exact bytes with BODY=8BITMIME, the second quoted-printable
    assert result.outcome is Outcome.SENT
    [received] = smtp_server.messages
    if has_8bitmime:
        assert received.data == original
        assert "BODY=8BITMIME" in received.mail_options
    else:
        assert received.data.isascii() and "BODY=8BITMIME" not in received.mail_options
        assert received.data.count(b"Content-Transfer-Encoding: quoted-printable") == 2
        sent, got = (
            message_from_bytes(d, policy=policy.default) for d in (original, received.data)
        )
        assert [p.get_content() for p in sent.iter_parts()] == [  # type: ignore[attr-defined]
            p.get_content()
            for p in got.iter_parts()  # type: ignore[attr-defined]
        ]
        assert "Hello José," in got.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_the_exact_bytes_arrive(client_settings: Settings, smtp_server: FaultServer) -> None:
    data = (
        b".starts with a dot\r\nSubject: x\r\n\r\n.\r\n..\r\n. \r\n"
        + b"x" * 990
        + b"\r\n"
        + b"=C3=A9 qp\r\nlast line without dot.\r\n"
    )
    results = send(client_settings, [message(1, "a@x.test", data)])
    assert results[0].outcome is Outcome.SENT
    assert smtp_server.messages[0].data == data


# --- TLS and login --------------------------------------------------------------------------


def test_starttls_with_a_verified_certificate_and_a_login(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer], tls_files: TlsFiles
) -> None:
    server = make_smtp_server(
        tls_context=tls_files.server_context(),
        require_starttls=True,
        logins={"mailer": "s3cret"},
    )
    url = f"smtp://mailer:s3cret@127.0.0.1:{server.port}?starttls=1&cafile={tls_files.cert_path}"
    results = send(client_settings, [message(1, "a@x.test")], url)
    assert results[0].outcome is Outcome.SENT
    assert len(server.messages) == 1


def test_starttls_is_used_when_offered_without_checking_the_certificate(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer], tls_files: TlsFiles
) -> None:
    server = make_smtp_server(tls_context=tls_files.server_context(), require_starttls=True)
    results = send(client_settings, [message(1, "a@x.test")], server.url)
    assert results[0].outcome is Outcome.SENT


def test_a_wrong_password_defers_with_the_fix(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer], tls_files: TlsFiles
) -> None:
    server = make_smtp_server(tls_context=tls_files.server_context(), logins={"mailer": "s3cret"})
    url = f"smtp://mailer:wrong@127.0.0.1:{server.port}?starttls=1&cafile={tls_files.cert_path}"
    results = send(client_settings, [message(1, "a@x.test")], url)
    assert (results[0].outcome, results[0].kind) == (Outcome.DEFERRED, ReplyKind.CONNECTION)
    assert "check the user name and password" in results[0].reply
    assert "wrong" not in results[0].reply


def test_starttls_asked_for_but_not_offered_defers(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    results = send(client_settings, [message(1, "a@x.test")], smtp_server.url + "?starttls=1")
    assert (results[0].outcome, results[0].kind) == (Outcome.DEFERRED, ReplyKind.CONNECTION)
    assert "STARTTLS" in results[0].reply
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("smtp://mailer:s3cret@relay.example:587", "starttls=1"),
        ("smtp://mailer:s3cret@relay.example:587?starttls=0", "starttls=1"),
        ("smtp://mailer:s3cret@relay.example:587?starttls=1&verify=0", "cafile="),
        ("smtps://mailer:s3cret@relay.example?verify=0", "cafile="),
    ],
)
def test_credentials_without_verified_tls_are_refused_at_start_with_the_fix(
    url: str, fix: str
) -> None:
    for refuse in (
        lambda: parse_relays(url),
        lambda: Settings.from_env({"MAILER_SMTP_URL": url}, env_file=None),
    ):
        with pytest.raises(ConfigError) as info:
            refuse()
        assert fix in str(info.value) and "TLS" in str(info.value)
        assert "s3cret" not in str(info.value)


def test_credentials_never_go_out_in_clear_to_a_server_without_starttls(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer]
) -> None:
    # a server that offers AUTH over plain text and no STARTTLS, as a downgrading attacker does
    server = make_smtp_server(logins={"mailer": "s3cret"}, auth_require_tls=False)
    with pytest.raises(ConfigError):
        send(
            client_settings,
            [message(1, "a@x.test")],
            f"smtp://mailer:s3cret@127.0.0.1:{server.port}",
        )
    assert server.connection_count == 0


def test_the_shared_rate_limit_key_names_the_relay_without_its_password() -> None:
    name = rate_limit_name("smtp://mailer:s3cret@relay.example:587?starttls=1, smtps://b.example")
    assert name == "relay.example:587,b.example:465"
    assert rate_limit_name("capture://") == "capture"


def test_a_capture_url_without_a_running_capture_server_says_how_to_start_one(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="no capture server is running"):
        make_transport(Settings(var_dir=tmp_path, smtp_url="capture://"))


def test_smtps_speaks_tls_from_the_first_byte(
    client_settings: Settings, make_smtp_server: Callable[..., FaultServer], tls_files: TlsFiles
) -> None:
    server = make_smtp_server(implicit_tls_context=tls_files.server_context())
    url = f"{server.url}?cafile={tls_files.cert_path}"
    assert url.startswith("smtps://")
    results = send(client_settings, [message(1, "a@x.test")], url)
    assert results[0].outcome is Outcome.SENT
    # A certificate nobody vouches for is refused when verification is asked for
    results = send(client_settings, [message(2, "b@x.test")], server.url)
    assert (results[0].outcome, results[0].kind) == (Outcome.DEFERRED, ReplyKind.CONNECTION)
    assert len(server.messages) == 1


# --- silence, recovery, odd input -----------------------------------------------------------


def test_a_server_silent_after_the_content_times_out_into_an_uncertain_deferral(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.on_data("silent@x.test", HANG)
    settings = client_settings.with_(smtp_pool_size=1)
    messages = [message(1, "a@x.test"), message(2, "silent@x.test"), message(3, "b@x.test")]
    url = smtp_server.url + "?timeout_s=0.5"
    results = send(settings, messages, url)
    assert (results[1].outcome, results[1].kind) == (Outcome.DEFERRED, ReplyKind.LOST)
    assert "timed out" in results[1].reply.lower()
    assert results[0].outcome is Outcome.SENT
    assert results[2].outcome is Outcome.SENT


def test_a_short_outage_is_ridden_out_by_the_connection_backoff(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.down_for(0.4)
    results = send(client_settings, [message(1, "a@x.test")])
    assert results[0].outcome is Outcome.SENT


def test_a_longer_outage_defers_and_then_the_server_comes_back_by_itself(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    smtp_server.down_for(3.0)
    assert send(client_settings, [message(1, "a@x.test")])[0].kind is ReplyKind.CONNECTION
    deadline = time.monotonic() + 5
    while smtp_server.connection_count == 0 and time.monotonic() < deadline:
        results = send(client_settings, [message(1, "a@x.test")])
    assert results[0].outcome is Outcome.SENT


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("rcpt", "a@x.test>\r\nRCPT TO:<evil@x.test", ReplyKind.HARD),
        ("rcpt", "", ReplyKind.HARD),
        ("rcpt", "two words@x.test", ReplyKind.HARD),
        ("mail_from", "b@cpi.example>\r\nRSET", ReplyKind.POLICY),
    ],
)
def test_an_address_that_would_break_the_command_line_fails_unsent(
    client_settings: Settings, smtp_server: FaultServer, field: str, value: str, kind: ReplyKind
) -> None:
    bad = message(1, "a@x.test")
    setattr(bad, field, value)
    results = send(client_settings, [bad, message(2, "good@x.test")])
    assert (results[0].outcome, results[0].kind, results[0].code) == (Outcome.FAILED, kind, None)
    assert results[1].outcome is Outcome.SENT
    assert [m.rcpt_tos for m in smtp_server.messages] == [["good@x.test"]]


def test_a_client_bug_on_one_message_defers_it_and_spares_the_batch(
    client_settings: Settings, smtp_server: FaultServer
) -> None:
    broken = message(2, "broken@x.test")
    broken.data = None  # type: ignore[assignment]
    messages = [message(1, "a@x.test"), broken, message(3, "b@x.test")]
    results = send(client_settings.with_(smtp_pool_size=1), messages)
    assert [r.send_id for r in results] == [1, 2, 3]
    assert (results[1].outcome, results[1].kind) == (Outcome.DEFERRED, ReplyKind.CONNECTION)
    assert results[0].outcome is Outcome.SENT
    assert results[2].outcome is Outcome.SENT


def _unstuff(wire: bytes) -> bytes:
    """What a receiving server makes of a DATA payload (RFC 5321 §4.5.2)."""
    lines = wire.split(b"\r\n")
    assert lines[-2:] == [b".", b""]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-2])


_LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(st.lists(_LINE, min_size=1))
def test_dot_stuffing_round_trips_any_crlf_text(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(data)
    assert b"\r\n.\r\n" not in b"\r\n" + wire[:-3]  # no early end of data
    assert _unstuff(wire) == data


@pytest.mark.parametrize("client", CLIENTS)
def test_a_relay_that_never_greets_costs_one_timeout_not_one_per_attempt(
    smtp_settings: Settings, client: str
) -> None:
    async def run() -> tuple[list[DeliveryResult], float]:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # accept, say nothing

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = smtp_settings.with_(smtp_client=client, smtp_pool_size=4)
        transport = make_transport(settings, f"smtp://127.0.0.1:{port}?timeout_s=0.5")
        started = time.monotonic()
        results = await transport.send_batch([message(i, f"r{i}@x.test") for i in range(8)])
        elapsed_s = time.monotonic() - started
        await transport.close()
        server.close()
        return results, elapsed_s

    results, elapsed_s = asyncio.run(run())
    assert {(r.outcome, r.kind) for r in results} == {(Outcome.DEFERRED, ReplyKind.CONNECTION)}
    assert elapsed_s < 1.5
