"""Provider event webhooks against the app under uvicorn, with signatures made in the test by
keys and a certificate generated here (cryptography); the SNS certificate is served by a real
local HTTP server (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailer.deliverability.providers import ses
from mailer.models import Contact, DeliveryEvent, OptOut, Send, SoftBounce, Suppression, utcnow
from mailer.outgoing import OutgoingMessage
from mailer.runtime import Runtime
from mailer.transports.capture import free_port
from mailer.web import create_app
from tests.http_fixtures import HttpServer
from tests.test_bounces import _mailed

MAILGUN_KEY = "key-mailgun-test-0123456789"
POSTMARK_AUTH = "postmark:pm-password-0123"
POSTMARK_SECRET = "pm-secret-abcdef"


@pytest.fixture(scope="module")
def sns_key() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hook_rt(
    rt: Runtime, http_server: HttpServer, sendgrid_key: ec.EllipticCurvePrivateKey
) -> Runtime:
    public_der = sendgrid_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = rt.settings.with_(
        ses_cert_url_pattern=rf"^http://127\.0\.0\.1:{http_server.port}/SimpleNotificationService-[0-9a-f]+\.pem$",
        sendgrid_webhook_public_key=base64.b64encode(public_der).decode(),
        postmark_webhook_auth=_secret(POSTMARK_AUTH),
        postmark_webhook_secret=_secret(POSTMARK_SECRET),
        mailgun_signing_key=_secret(MAILGUN_KEY),
        webhook_max_age_s=600,
    )
    return Runtime(settings, rt.engine, rt.sessions)


def _secret(value: str) -> Any:
    from mailer.config import Secret

    return Secret(value)


@pytest.fixture
def base_url(hook_rt: Runtime) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(runtime=hook_rt), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def mailed(hook_rt: Runtime, make_contact: Callable[..., Contact]) -> OutgoingMessage:
    return _mailed(hook_rt, make_contact())


def _suppressed(rt: Runtime) -> list[str]:
    with rt.sessions() as s:
        return [r.address for r in s.scalars(select(Suppression))]


def _opt_outs(rt: Runtime) -> list[tuple[str, str]]:
    with rt.sessions() as s:
        return sorted((o.category, o.source) for o in s.scalars(select(OptOut)))


# -- Amazon SES through SNS ---------------------------------------------------------------


def _sns(
    key: rsa.RSAPrivateKey,
    cert_url: str,
    ses_event: dict[str, Any],
    *,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    message = {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:ses-events",
        "Message": json.dumps(ses_event),
        "Timestamp": (at or utcnow()).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "2",
        "SigningCertURL": cert_url,
    }
    signature = key.sign(ses.canonical_string(message), padding.PKCS1v15(), hashes.SHA256())
    message["Signature"] = base64.b64encode(signature).decode()
    return message


def _ses_bounce(mailed: OutgoingMessage, bounce_type: str = "Permanent") -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bouncedRecipients": [
                {"emailAddress": mailed.rcpt, "status": "5.1.1", "diagnosticCode": "smtp; 550"}
            ],
        },
        "mail": {
            "source": mailed.mail_from,
            "commonHeaders": {"messageId": mailed.message_id},
        },
    }


def test_an_ses_hard_bounce_signed_by_sns_suppresses_once_and_the_cert_is_fetched_once(
    hook_rt: Runtime,
    base_url: str,
    http_server: HttpServer,
    mailed: OutgoingMessage,
    sns_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    key, pem = sns_key
    cert_url = http_server.serve("/SimpleNotificationService-0a1b2c.pem", pem)
    message = _sns(key, cert_url, _ses_bounce(mailed))
    first = httpx.post(f"{base_url}/webhooks/ses", json=message)
    assert first.status_code == 200, first.text
    assert first.json()["taken"] == 1
    again = httpx.post(f"{base_url}/webhooks/ses", json=message)
    assert again.json() == {"provider": "ses", "taken": 0, "duplicates": 1, "ignored": []}
    assert _suppressed(hook_rt) == [mailed.rcpt]
    with hook_rt.sessions() as s:
        assert s.get_one(Send, mailed.send_id).status == "failed"
    assert http_server.gets("/SimpleNotificationService-0a1b2c.pem") == 1


def test_sns_messages_unsigned_tampered_stale_or_signed_elsewhere_are_refused(
    hook_rt: Runtime,
    base_url: str,
    http_server: HttpServer,
    mailed: OutgoingMessage,
    sns_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    key, pem = sns_key
    cert_url = http_server.serve("/SimpleNotificationService-0a1b2c.pem", pem)
    unsigned = _sns(key, cert_url, _ses_bounce(mailed))
    del unsigned["Signature"]
    tampered = _sns(key, cert_url, _ses_bounce(mailed, "Transient"))
    tampered["Message"] = json.dumps(_ses_bounce(mailed, "Permanent"))
    stale = _sns(key, cert_url, _ses_bounce(mailed), at=utcnow() - dt.timedelta(hours=2))
    elsewhere_url = http_server.serve("/attacker/cert.pem", pem)
    elsewhere = _sns(key, elsewhere_url, _ses_bounce(mailed))
    for message, words in [
        (unsigned, "unsigned"),
        (tampered, "does not verify"),
        (stale, "old"),
        (elsewhere, "does not match MAILER_SES_CERT_URL_PATTERN"),
    ]:
        answer = httpx.post(f"{base_url}/webhooks/ses", json=message)
        assert answer.status_code == 401, answer.text
        assert words in answer.json()["error"]
    assert http_server.gets("/attacker/cert.pem") == 0
    assert _suppressed(hook_rt) == []


# -- SendGrid -------------------------------------------------------------------------------


def _sendgrid_post(
    base_url: str, key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]], *, at: int = 0
) -> httpx.Response:
    body = json.dumps(events).encode()
    timestamp = str(at or int(time.time()))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return httpx.post(
        f"{base_url}/webhooks/sendgrid",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )


def test_a_sendgrid_spam_report_opts_out_and_counts_as_a_complaint_once(
    hook_rt: Runtime,
    base_url: str,
    mailed: OutgoingMessage,
    sendgrid_key: ec.EllipticCurvePrivateKey,
) -> None:
    events = [
        {
            "email": mailed.rcpt,
            "event": "delivered",
            "sg_event_id": "d1",
            "smtp-id": mailed.message_id,
            "timestamp": int(time.time()),
        },
        {
            "email": mailed.rcpt,
            "event": "spamreport",
            "sg_event_id": "s1",
            "smtp-id": mailed.message_id,
            "timestamp": int(time.time()),
        },
    ]
    answer = _sendgrid_post(base_url, sendgrid_key, events)
    assert answer.status_code == 200, answer.text
    assert answer.json()["taken"] == 2
    assert _sendgrid_post(base_url, sendgrid_key, events).json()["duplicates"] == 2
    assert _opt_outs(hook_rt) == [("all_marketing", "complaint"), ("service", "complaint")]
    with hook_rt.sessions() as s:
        kinds = sorted(e.kind for e in s.scalars(select(DeliveryEvent)))
        assert kinds == ["complaint", "complaint", "delivered"]  # sendgrid's and the core's


def test_sendgrid_requests_wrongly_signed_unsigned_or_stale_are_refused(
    hook_rt: Runtime,
    base_url: str,
    mailed: OutgoingMessage,
    sendgrid_key: ec.EllipticCurvePrivateKey,
) -> None:
    events = [
        {
            "email": mailed.rcpt,
            "event": "spamreport",
            "sg_event_id": "s2",
            "smtp-id": mailed.message_id,
        }
    ]
    other_key = ec.generate_private_key(ec.SECP256R1())
    assert _sendgrid_post(base_url, other_key, events).status_code == 401
    stale = _sendgrid_post(base_url, sendgrid_key, events, at=int(time.time()) - 3600)
    assert stale.status_code == 401 and "old" in stale.json()["error"]
    unsigned = httpx.post(f"{base_url}/webhooks/sendgrid", json=events)
    assert unsigned.status_code == 401
    assert _opt_outs(hook_rt) == []


# -- Postmark -------------------------------------------------------------------------------


def _postmark_post(
    base_url: str,
    event: dict[str, Any],
    *,
    auth: str = POSTMARK_AUTH,
    secret: str = POSTMARK_SECRET,
) -> httpx.Response:
    user, _, password = auth.partition(":")
    return httpx.post(
        f"{base_url}/webhooks/postmark",
        json=event,
        auth=(user, password),
        headers={"X-Mailer-Webhook-Secret": secret},
    )


def test_a_postmark_hard_bounce_is_matched_by_recipient_and_needs_auth_and_secret(
    hook_rt: Runtime, base_url: str, mailed: OutgoingMessage
) -> None:
    event = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "ID": 4323372036854775807,
        "Email": mailed.rcpt,
        "BouncedAt": utcnow().isoformat(),
        "Description": "The server was unable to deliver your message",
    }
    assert _postmark_post(base_url, event, secret="wrong").status_code == 401
    assert _postmark_post(base_url, event, auth="postmark:guess").status_code == 401
    no_auth = httpx.post(f"{base_url}/webhooks/postmark", json=event)
    assert no_auth.status_code == 401
    stale = dict(event, BouncedAt=(utcnow() - dt.timedelta(hours=3)).isoformat())
    assert _postmark_post(base_url, stale).status_code == 401
    assert _suppressed(hook_rt) == []
    answer = _postmark_post(base_url, event)
    assert answer.status_code == 200 and answer.json()["taken"] == 1, answer.text
    assert _postmark_post(base_url, event).json()["duplicates"] == 1
    assert _suppressed(hook_rt) == [mailed.rcpt]


# -- Mailgun --------------------------------------------------------------------------------


def _mailgun_body(event_data: dict[str, Any], *, token: str = "", at: int = 0) -> dict[str, Any]:
    timestamp = str(at or int(time.time()))
    token = token or uuid.uuid4().hex
    signature = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256)
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()},
        "event-data": event_data,
    }


def test_mailgun_soft_bounces_count_unsubscribes_opt_out_and_a_replayed_token_is_refused(
    hook_rt: Runtime, base_url: str, mailed: OutgoingMessage
) -> None:
    failed = {
        "event": "failed",
        "severity": "temporary",
        "id": "mg-1",
        "recipient": mailed.rcpt,
        "envelope": {"sender": mailed.mail_from},
        "message": {"headers": {"message-id": mailed.message_id.strip("<>")}},
        "delivery-status": {"code": 452, "enhanced-code": "4.2.2", "message": "mailbox full"},
    }
    body = _mailgun_body(failed)
    answer = httpx.post(f"{base_url}/webhooks/mailgun", json=body)
    assert answer.status_code == 200 and answer.json()["taken"] == 1, answer.text
    replay = httpx.post(f"{base_url}/webhooks/mailgun", json=body)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]
    with hook_rt.sessions() as s:
        assert s.get_one(SoftBounce, hook_rt.hash_address(mailed.rcpt)).count == 1
    forged = _mailgun_body(dict(failed, id="mg-2"))
    forged["signature"]["signature"] = "0" * 64
    assert httpx.post(f"{base_url}/webhooks/mailgun", json=forged).status_code == 401
    stale = _mailgun_body(dict(failed, id="mg-3"), at=int(time.time()) - 7200)
    assert httpx.post(f"{base_url}/webhooks/mailgun", json=stale).status_code == 401
    unsubscribed = dict(failed, event="unsubscribed", id="mg-4")
    unsubscribed.pop("delivery-status")
    answer = httpx.post(f"{base_url}/webhooks/mailgun", json=_mailgun_body(unsubscribed))
    assert answer.json()["taken"] == 1
    assert _opt_outs(hook_rt) == [("all_marketing", "provider")]


def test_an_unknown_provider_is_404(base_url: str) -> None:
    assert httpx.post(f"{base_url}/webhooks/sparkpost", json={}).status_code == 404


def test_an_sns_subscription_is_confirmed_on_the_certificates_host_only(
    hook_rt: Runtime,
    base_url: str,
    http_server: HttpServer,
    sns_key: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    key, pem = sns_key
    cert_url = http_server.serve("/SimpleNotificationService-0a1b2c.pem", pem)
    confirm_url = http_server.serve("/confirm", b"<ConfirmSubscriptionResponse/>")

    def subscription(url: str) -> dict[str, Any]:
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": "tok",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:ses-events",
            "Message": "You have chosen to subscribe",
            "SubscribeURL": url,
            "Timestamp": utcnow().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "SignatureVersion": "1",
            "SigningCertURL": cert_url,
        }
        signature = key.sign(ses.canonical_string(message), padding.PKCS1v15(), hashes.SHA1())
        message["Signature"] = base64.b64encode(signature).decode()
        return message

    elsewhere = httpx.post(
        f"{base_url}/webhooks/ses", json=subscription("http://localhost:9/confirm")
    )
    assert elsewhere.status_code == 400
    answer = httpx.post(f"{base_url}/webhooks/ses", json=subscription(confirm_url))
    assert answer.status_code == 200, answer.text
    assert http_server.gets("/confirm") == 1
