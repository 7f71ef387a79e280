"""Postmark webhooks: HTTP basic auth in the webhook URL plus a secret custom header.

Postmark signs nothing; what proves a request is the basic-auth credentials
(MAILER_POSTMARK_WEBHOOK_AUTH, "user:password") and the `X-Mailer-Webhook-Secret` header that
the webhook is configured to send (MAILER_POSTMARK_WEBHOOK_SECRET), both compared in constant
time, over HTTPS (the public app runs behind the TLS proxy). Staleness is the event's own time
(DeliveredAt, BouncedAt, ChangedAt …).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
from collections.abc import Mapping
from typing import Any

from mailer.config import Settings
from mailer.deliverability.providers.base import ProviderEvent, WebhookRefused, check_fresh

SECRET_HEADER = "x-mailer-webhook-secret"
_TIME_FIELDS = ("DeliveredAt", "BouncedAt", "ChangedAt", "ReceivedAt")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def verify_and_parse(
    settings: Settings, headers: Mapping[str, str], body: bytes, now: dt.datetime
) -> list[ProviderEvent]:
    auth, secret = (
        settings.postmark_webhook_auth.reveal(),
        settings.postmark_webhook_secret.reveal(),
    )
    if not auth or not secret:
        raise WebhookRefused(
            401, "MAILER_POSTMARK_WEBHOOK_AUTH and MAILER_POSTMARK_WEBHOOK_SECRET are not set"
        )
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded, validate=True).decode() if scheme == "Basic" else ""
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    if not given or not _same(given, auth):
        raise WebhookRefused(401, "Postmark request without the configured basic auth")
    if not _same(headers.get(SECRET_HEADER, ""), secret):
        raise WebhookRefused(401, f"Postmark request without the configured {SECRET_HEADER}")
    try:
        event = json.loads(body)
    except ValueError as exc:
        raise WebhookRefused(400, "the body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookRefused(400, "Postmark posts one JSON object per event")
    at = _time(event)
    check_fresh(settings, at, now, "the Postmark event")
    return [_event(event, at)]


def _time(event: Mapping[str, Any]) -> dt.datetime:
    for name in _TIME_FIELDS:
        if event.get(name):
            try:
                return dt.datetime.fromisoformat(str(event[name]).replace("Z", "+00:00"))
            except ValueError as exc:
                raise WebhookRefused(400, f"{name} {event[name]!r} is not an ISO time") from exc
    raise WebhookRefused(400, f"a Postmark event without a time ({', '.join(_TIME_FIELDS)})")


def _event(event: Mapping[str, Any], at: dt.datetime) -> ProviderEvent:
    record = str(event.get("RecordType", ""))
    recipient = str(event.get("Recipient") or event.get("Email") or "")
    metadata = event.get("Metadata") or {}
    message_id = str(metadata.get("message-id", "")) if isinstance(metadata, dict) else ""
    kind, status = "other", ""
    if record == "Delivery":
        kind = "delivered"
    elif record == "SpamComplaint" or event.get("Type") == "SpamComplaint":
        kind = "complaint"
    elif record == "Bounce":
        hard = event.get("Type") in ("HardBounce", "BadEmailAddress", "ManuallyDeactivated")
        kind, status = ("hard_bounce", "5.1.1") if hard else ("soft_bounce", "4.0.0")
    elif record == "SubscriptionChange" and event.get("SuppressSending"):
        kind = "unsubscribe"
    key = str(event.get("ID") or f"{record}:{event.get('MessageID', '')}:{recipient}")
    return ProviderEvent(
        kind,
        key,
        recipient,
        message_id=message_id,
        status=status,
        detail=str(event.get("Description") or event.get("Details") or record),
        at=at,
    )
