"""Amazon SES event notifications, delivered by Amazon SNS.

SNS signs each message: an RSA signature (SignatureVersion 1: SHA1, 2: SHA256) over the
canonical string — selected fields as "Name\\nvalue\\n" in a fixed order — with the key of the
certificate at `SigningCertURL`. That URL must match MAILER_SES_CERT_URL_PATTERN (Amazon's
sns.<region>.amazonaws.com by default) before anything is fetched from it: otherwise anyone
could sign with a certificate of their own. Certificates are cached per URL in the process.

A `SubscriptionConfirmation` is confirmed by fetching its SubscribeURL, which must be on the
signing certificate's host. A `Notification` carries the SES event as JSON in `Message`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailer.config import Settings
from mailer.deliverability.providers.base import ProviderEvent, WebhookRefused, check_fresh

#: The fields signed, in order, for each message type (absent optional fields are skipped).
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_cache: dict[str, x509.Certificate] = {}
_cache_lock = threading.Lock()
#: How long a certificate fetch may take.
_FETCH_TIMEOUT_S = 10.0


def canonical_string(message: Mapping[str, Any]) -> bytes:
    """What SNS signed for `message`."""
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise WebhookRefused(400, f"unknown SNS message type {message.get('Type')!r}")
    parts = []
    for name in fields:
        if name in message and message[name] is not None:
            parts.append(f"{name}\n{message[name]}\n")
    return "".join(parts).encode()


def _certificate(settings: Settings, url: str) -> x509.Certificate:
    if not url or not re.fullmatch(settings.ses_cert_url_pattern, url):
        raise WebhookRefused(
            401,
            f"SigningCertURL {url!r} does not match MAILER_SES_CERT_URL_PATTERN; only Amazon's "
            "certificates are believed",
        )
    with _cache_lock:
        cached = _cache.get(url)
    if cached is not None:
        return cached
    try:
        with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as response:
            pem = response.read(64 * 1024)
        certificate = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise WebhookRefused(503, f"cannot fetch the SNS signing certificate: {exc}") from exc
    with _cache_lock:
        _cache[url] = certificate
    return certificate


def _verify(settings: Settings, message: Mapping[str, Any]) -> None:
    version = str(message.get("SignatureVersion", ""))
    algorithm = _HASHES.get(version)
    if algorithm is None or not message.get("Signature"):
        raise WebhookRefused(401, "unsigned SNS message (no Signature or SignatureVersion 1/2)")
    certificate = _certificate(settings, str(message.get("SigningCertURL", "")))
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRefused(401, "the SNS signing certificate holds no RSA key")
    try:
        signature = base64.b64decode(str(message["Signature"]), validate=True)
        key.verify(signature, canonical_string(message), padding.PKCS1v15(), algorithm())
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise WebhookRefused(401, "the SNS signature does not verify") from exc


def _timestamp(raw: object) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise WebhookRefused(400, f"SNS Timestamp {raw!r} is not an ISO time") from exc


def verify_and_parse(
    settings: Settings, headers: Mapping[str, str], body: bytes, now: dt.datetime
) -> list[ProviderEvent]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise WebhookRefused(400, "the body is not JSON (an SNS message is)") from exc
    if not isinstance(message, dict):
        raise WebhookRefused(400, "an SNS message is a JSON object")
    _verify(settings, message)
    check_fresh(settings, _timestamp(message.get("Timestamp")), now, "the SNS message")
    topics = settings.ses_topic_arns
    if topics and str(message.get("TopicArn", "")).lower() not in topics:
        raise WebhookRefused(
            403, f"topic {message.get('TopicArn')!r} is not in MAILER_SES_TOPIC_ARNS"
        )
    if message["Type"] == "SubscriptionConfirmation":
        _confirm(message)
        return []
    if message["Type"] != "Notification":
        return []
    try:
        event = json.loads(str(message.get("Message", "")))
    except ValueError as exc:
        raise WebhookRefused(400, "the SNS Message is not an SES event (JSON)") from exc
    return _events(str(message["MessageId"]), event)


def _confirm(message: Mapping[str, Any]) -> None:
    url = str(message.get("SubscribeURL", ""))
    cert_host = urlsplit(str(message.get("SigningCertURL", ""))).hostname
    if urlsplit(url).hostname != cert_host:
        raise WebhookRefused(400, "SubscribeURL is not on the signing certificate's host")
    with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as response:
        response.read(64 * 1024)


def _events(sns_id: str, event: Mapping[str, Any]) -> list[ProviderEvent]:
    kind = str(event.get("notificationType") or event.get("eventType") or "")
    mail = event.get("mail") or {}
    common = mail.get("commonHeaders") or {}
    base: dict[str, Any] = {
        "message_id": str(common.get("messageId", "")),
        "envelope_sender": str(mail.get("source", "")),
    }
    found: list[ProviderEvent] = []
    if kind == "Bounce":
        bounce = event.get("bounce") or {}
        hard = bounce.get("bounceType") == "Permanent"
        for r in bounce.get("bouncedRecipients") or []:
            found.append(
                ProviderEvent(
                    "hard_bounce" if hard else "soft_bounce",
                    f"{sns_id}:{r.get('emailAddress', '')}",
                    str(r.get("emailAddress", "")),
                    status=str(r.get("status", "")),
                    detail=str(r.get("diagnosticCode", bounce.get("bounceSubType", ""))),
                    **base,
                )
            )
    elif kind == "Complaint":
        complaint = event.get("complaint") or {}
        for r in complaint.get("complainedRecipients") or []:
            found.append(
                ProviderEvent(
                    "complaint",
                    f"{sns_id}:{r.get('emailAddress', '')}",
                    str(r.get("emailAddress", "")),
                    detail=str(complaint.get("complaintFeedbackType", "")),
                    **base,
                )
            )
    elif kind == "Delivery":
        for address in (event.get("delivery") or {}).get("recipients") or []:
            found.append(ProviderEvent("delivered", f"{sns_id}:{address}", str(address), **base))
    elif kind == "DeliveryDelay":
        delay = event.get("deliveryDelay") or {}
        for r in delay.get("delayedRecipients") or []:
            found.append(
                ProviderEvent(
                    "soft_bounce",
                    f"{sns_id}:{r.get('emailAddress', '')}",
                    str(r.get("emailAddress", "")),
                    status=str(r.get("status", "")),
                    detail=str(r.get("diagnosticCode", "")),
                    **base,
                )
            )
    return found
