"""SendGrid's Event Webhook: an ECDSA P-256 signature (SHA-256) over timestamp + raw body.

Headers: `X-Twilio-Email-Event-Webhook-Signature` (base64 DER signature) and
`X-Twilio-Email-Event-Webhook-Timestamp` (Unix seconds). The verification key is SendGrid's
base64 DER public key, set as MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailer.config import Settings
from mailer.deliverability.providers.base import ProviderEvent, WebhookRefused, check_fresh

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"


@functools.lru_cache(maxsize=4)
def _key(encoded: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_der_public_key(base64.b64decode(encoded))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve key")
    return key


def verify_and_parse(
    settings: Settings, headers: Mapping[str, str], body: bytes, now: dt.datetime
) -> list[ProviderEvent]:
    if not settings.sendgrid_webhook_public_key:
        raise WebhookRefused(401, "MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: refused")
    signature, timestamp = headers.get(SIGNATURE_HEADER, ""), headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp.isdigit():
        raise WebhookRefused(401, "unsigned SendGrid request (signature or timestamp missing)")
    check_fresh(
        settings, dt.datetime.fromtimestamp(int(timestamp), dt.UTC), now, "the SendGrid signature"
    )
    try:
        key = _key(settings.sendgrid_webhook_public_key)
    except (ValueError, binascii.Error) as exc:
        raise WebhookRefused(
            500, "MAILER_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER EC public key"
        ) from exc
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise WebhookRefused(401, "the SendGrid signature does not verify") from exc
    try:
        events = json.loads(body)
    except ValueError as exc:
        raise WebhookRefused(400, "the body is not JSON") from exc
    if not isinstance(events, list):
        raise WebhookRefused(400, "SendGrid posts a JSON array of events")
    return [_event(e) for e in events if isinstance(e, dict)]


def _event(e: Mapping[str, Any]) -> ProviderEvent:
    name = str(e.get("event", ""))
    status = str(e.get("status", ""))
    if name == "bounce":
        soft = e.get("type") == "blocked" or status.startswith("4")
        kind = "soft_bounce" if soft else "hard_bounce"
    else:
        kind = {
            "delivered": "delivered",
            "spamreport": "complaint",
            "unsubscribe": "unsubscribe",
            "group_unsubscribe": "unsubscribe",
        }.get(name, "other")
    message_id = str(e.get("smtp-id", ""))
    return ProviderEvent(
        kind,
        str(e.get("sg_event_id") or f"{name}:{message_id}:{e.get('email', '')}"),
        str(e.get("email", "")),
        message_id=message_id,
        status=status,
        detail=str(e.get("reason", name)),
    )
