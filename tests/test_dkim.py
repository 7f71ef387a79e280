"""DKIM: messages signed with a fresh RSA 2048 key verify with dkimpy through a dnsfunc stub;
tampering fails; h= covers the one-click and feedback headers and over-signs From."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from mailer.config import Secret, Settings
from mailer.enums import Category
from mailer.errors import ConfigError
from mailer.messages import CampaignInfo, CampaignMessages, Recipient, SenderIdentity, load_template
from mailer.messages.dkim import DkimSigner
from mailer.outgoing import OutgoingMessage
from mailer.transports import make_transport

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = {
    Category.PROMOTIONS: "promotions/open-enrollment",
    Category.SERVICE: "service/planned-maintenance",
    Category.POLICY: "policy/privacy-policy-change",
}
RECIPIENT = Recipient(
    send_id=9,
    contact_id=3,
    email="pat@client.example",
    first_name="José",
    last_name="Müller",
    org_name="Zoë's Café",
    org_kind="client",
    manager_name="Dana Reyes",
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Callable[..., bytes | None]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path_factory.mktemp("dkim") / "s2024.pem"
    path.write_bytes(pem)
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return txt if name == b"s2024._domainkey.cpi.example." else None

    return path, dnsfunc


def build(key_path: Path, category: Category, recipient: Recipient = RECIPIENT) -> OutgoingMessage:
    settings = Settings(
        templates_dir=ROOT / "templates",
        secret_key=Secret("test-secret-0123456789"),
        public_base_url="https://u.cpi.example",
        dkim_private_key_path=str(key_path),
        dkim_selector="s2024",
        dkim_domain="cpi.example",
    )
    tpl = load_template(settings, TEMPLATES[category])
    messages = CampaignMessages(
        settings,
        template=tpl,
        campaign=CampaignInfo(id=4, name="c", category=category),
        sender=SenderIdentity("Dana Reyes", "dana.reyes@cpi.example"),
        params={"version": "2", "effective_date": "January 1, 2027"},
    )
    return messages.build(recipient)


def signed_headers(data: bytes) -> list[str]:
    sig = data.split(b"\r\n\r\n", 1)[0].decode()
    block = re.search(r"DKIM-Signature:(.*?)\r\n(?! )", sig, re.S).group(1)  # type: ignore[union-attr]
    h = re.search(r"\bh=([^;]+)", re.sub(r"\s+", "", block)).group(1)  # type: ignore[union-attr]
    return h.lower().split(":")


@pytest.mark.parametrize("category", list(TEMPLATES))
def test_a_signed_message_verifies_with_the_public_key(key, category: Category) -> None:
    path, dnsfunc = key
    out = build(path, category)
    assert out.data.startswith(b"DKIM-Signature:")
    assert dkim.verify(out.data, dnsfunc=dnsfunc, minkey=1024)
    tags = re.sub(r"\s+", "", out.data.split(b"\r\n\r\n")[0].decode())
    assert "c=relaxed/relaxed" in tags and "d=cpi.example" in tags and "s=s2024" in tags


def test_h_covers_both_list_unsubscribe_headers_and_feedback_id_and_over_signs_from(key):
    path, _ = key
    h = signed_headers(build(path, Category.PROMOTIONS).data)
    for name in ("from", "to", "subject", "date", "message-id", "mime-version", "content-type"):
        assert name in h
    for name in ("list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id"):
        assert name in h
    assert h.count("from") == 2


def test_policy_signature_covers_auto_submitted_and_no_unsubscribe_headers(key):
    path, dnsfunc = key
    out = build(path, Category.POLICY)
    h = signed_headers(out.data)
    assert "auto-submitted" in h and "feedback-id" in h
    assert "list-unsubscribe" not in h and "list-unsubscribe-post" not in h
    assert dkim.verify(out.data, dnsfunc=dnsfunc)


def test_service_signature_covers_reply_to(key):
    path, dnsfunc = key
    out = build(path, Category.SERVICE)
    assert "reply-to" in signed_headers(out.data)
    assert dkim.verify(out.data, dnsfunc=dnsfunc)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"One-Click", b"Two-Click"),
        (b"Content-Transfer-Encoding: ", b"Content-Transfer-Encoding: X"),
        (b"</html>", b"</html>X"),
        (b"Feedback-ID: c4", b"Feedback-ID: c5"),
    ],
)
def test_tampering_with_a_signed_part_fails_verification(key, old: bytes, new: bytes) -> None:
    path, dnsfunc = key
    out = build(path, Category.PROMOTIONS)
    assert old in out.data
    assert not dkim.verify(out.data.replace(old, new, 1), dnsfunc=dnsfunc)


def test_adding_a_second_from_breaks_the_signature(key) -> None:
    path, dnsfunc = key
    out = build(path, Category.PROMOTIONS)
    head, body = out.data.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: Mallory <m@evil.example>\r\n\r\n" + body
    assert not dkim.verify(forged, dnsfunc=dnsfunc)


def test_an_smtputf8_message_signs_and_verifies(key) -> None:
    path, dnsfunc = key
    out = build(
        path, Category.PROMOTIONS, dataclasses.replace(RECIPIENT, email="josé@client.example")
    )
    assert out.needs_smtputf8
    assert dkim.verify(out.data, dnsfunc=dnsfunc)


def test_no_signature_without_a_configured_key() -> None:
    settings = Settings(templates_dir=ROOT / "templates")
    tpl = load_template(settings, TEMPLATES[Category.PROMOTIONS])
    out = CampaignMessages(
        settings,
        template=tpl,
        campaign=CampaignInfo(id=1, name="c", category=Category.PROMOTIONS),
        sender=SenderIdentity("M", "news@cpi.example"),
    ).build(RECIPIENT)
    assert b"DKIM-Signature" not in out.data


def test_a_key_without_a_selector_is_a_config_error(key) -> None:
    path, _ = key
    settings = Settings(templates_dir=ROOT / "templates", dkim_private_key_path=str(path))
    tpl = load_template(settings, TEMPLATES[Category.PROMOTIONS])
    with pytest.raises(ConfigError, match="SELECTOR"):
        CampaignMessages(
            settings,
            template=tpl,
            campaign=CampaignInfo(id=1, name="c", category=Category.PROMOTIONS),
            sender=SenderIdentity("M", "news@cpi.example"),
        )


bodies = st.lists(st.text(alphabet=" \tab.=\u00e9", max_size=40), max_size=8).map(
    lambda lines: "\r\n".join(lines).encode("utf-8")
)


@hyp_settings(max_examples=40, deadline=None)
@given(body=bodies, trailing=st.sampled_from([b"\r\n", b"\r\n\r\n\r\n", b" \t\r\n"]))
def test_our_canonicalization_agrees_with_dkimpy_on_any_body(key, body: bytes, trailing: bytes):
    # SMTP DATA always ends in CRLF, so every body we sign does too.
    path, dnsfunc = key
    signer = DkimSigner("s2024", "cpi.example", path.read_bytes(), ["From", "Subject", "From"])
    message = (
        b"From: a@cpi.example\r\nSubject:  two  spaces \t\r\n folded\r\n\r\n" + body + trailing
    )
    assert dkim.verify(signer.sign(message), dnsfunc=dnsfunc)


def test_an_unusable_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PEM"):
        DkimSigner("s", "cpi.example", b"not a key", ["From"])
    other = ed25519.Ed25519PrivateKey.generate()
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError, match="must be RSA"):
        DkimSigner("s", "cpi.example", pem, ["From"])


@pytest.mark.parametrize(("client", "has_pipelining"), [("auto", True), ("aiosmtplib", False)])
def test_signatures_survive_the_smtp_round_trip(key, make_smtp_server, client, has_pipelining):
    # Given signed messages, one of them to an internationalized address
    path, dnsfunc = key
    server = make_smtp_server(has_pipelining=has_pipelining)
    outs = [
        build(path, Category.PROMOTIONS),
        build(path, Category.POLICY, dataclasses.replace(RECIPIENT, send_id=10)),
        build(
            path,
            Category.SERVICE,
            dataclasses.replace(RECIPIENT, send_id=11, email="josé@client.example"),
        ),
    ]
    # with a line that starts with a dot, which SMTP must dot-stuff and the server unstuff
    outs[0].data = dkim_resign(path, outs[0].data.replace(b"\r\nMake this", b"\r\n.Make this"))
    settings = Settings(smtp_url=server.url + "?timeout_s=5", smtp_client=client)

    # When they go through the transport into a real SMTP server
    async def send() -> list[object]:
        transport = make_transport(settings)
        await transport.open()
        try:
            return list(await transport.send_batch(outs))
        finally:
            await transport.close()

    results = asyncio.run(send())

    # Then every received copy is byte-identical and still verifies
    assert [getattr(r, "outcome", None) for r in results] == ["sent"] * 3, results
    assert len(server.messages) == 3
    for out in outs:
        [data] = [m.data for m in server.messages if out.message_id.encode() in m.data]
        assert data.replace(b"\r\n", b"\n") == out.data.replace(b"\r\n", b"\n")
        assert dkim.verify(data, dnsfunc=dnsfunc)


@pytest.mark.parametrize(("client", "has_pipelining"), [("auto", True), ("aiosmtplib", False)])
def test_a_relay_without_8bitmime_gets_quoted_printable_signed_anew(
    key, make_smtp_server, client, has_pipelining
):
    # Given a signed message with 8bit bodies and a relay that does not offer 8BITMIME
    path, dnsfunc = key
    server = make_smtp_server(has_pipelining=has_pipelining, has_8bitmime=False)
    out = build(path, Category.PROMOTIONS)
    assert b"Content-Transfer-Encoding: 8bit" in out.data
    settings = Settings(smtp_url=server.url + "?timeout_s=5", smtp_client=client)

    async def send() -> list[object]:
        transport = make_transport(settings)
        await transport.open()
        try:
            return list(await transport.send_batch([out]))
        finally:
            await transport.close()

    # When it is sent
    assert [getattr(r, "outcome", None) for r in asyncio.run(send())] == ["sent"]
    # Then the relay gets it quoted-printable, 7-bit clean, and the new signature verifies
    [received] = server.messages
    assert received.data.isascii() and b"quoted-printable" in received.data
    assert "BODY=8BITMIME" not in received.mail_options
    assert dkim.verify(received.data, dnsfunc=dnsfunc)


def dkim_resign(path: Path, data: bytes) -> bytes:
    unsigned = data.split(b"\r\n", 1)[1]
    while unsigned[:1] in (b" ", b"\t"):  # drop the old signature's continuation lines
        unsigned = unsigned.split(b"\r\n", 1)[1]
    names = ["From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe", "From"]
    return DkimSigner("s2024", "cpi.example", path.read_bytes(), names).sign(unsigned)
