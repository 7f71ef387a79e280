"""Mailgun webhooks: HMAC-SHA256 (the webhook signing key) of timestamp + token, hex.

A token is taken once: it is recorded in the same transaction as the events it came with, so
a replay within the freshness window is refused, and a request that failed may be retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.deliverability.events import record_event
from mailer.deliverability.providers.base import ProviderEvent, WebhookRefused, check_fresh
from mailer.models import DeliveryEvent

#: The delivery_events source under which used tokens are kept.
TOKEN_SOURCE = "mailgun-token"


def verify_and_parse(
    settings: Settings, headers: Mapping[str, str], body: bytes, now: dt.datetime
) -> list[ProviderEvent]:
    key = settings.mailgun_signing_key.reveal()
    if not key:
        raise WebhookRefused(401, "MAILER_MAILGUN_SIGNING_KEY is not set: refused")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise WebhookRefused(400, "the body is not JSON") from exc
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise WebhookRefused(401, "unsigned Mailgun request (no signature object)")
    timestamp, token = str(signature.get("timestamp", "")), str(signature.get("token", ""))
    given = str(signature.get("signature", ""))
    if not timestamp.isdigit() or not token or not given:
        raise WebhookRefused(401, "Mailgun signature without timestamp, token or signature")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise WebhookRefused(401, "the Mailgun signature does not verify")
    check_fresh(
        settings, dt.datetime.fromtimestamp(int(timestamp), dt.UTC), now, "the Mailgun signature"
    )
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise WebhookRefused(400, "a Mailgun request without event-data")
    return [_event(data, token)]


def token_of(body: bytes) -> str:
    return str(json.loads(body)["signature"]["token"])


def is_replay(session: Session, token: str) -> bool:
    return (
        session.scalar(
            select(DeliveryEvent.id).where(
                DeliveryEvent.source == TOKEN_SOURCE, DeliveryEvent.event_key == token[:200]
            )
        )
        is not None
    )


def record_token(session: Session, token: str, now: dt.datetime) -> None:
    """Keep the token, or refuse the request as a replay."""
    if not record_event(
        session,
        source=TOKEN_SOURCE,
        event_key=token,
        kind="other",
        send_id=None,
        campaign_id=None,
        now=now,
        detail="webhook token",
    ):
        raise WebhookRefused(401, "this Mailgun token was used before: a replay")


def _event(data: Mapping[str, Any], token: str) -> ProviderEvent:
    name = str(data.get("event", ""))
    status = data.get("delivery-status") or {}
    severity = str(data.get("severity", ""))
    if name == "failed":
        kind = "hard_bounce" if severity == "permanent" else "soft_bounce"
    else:
        kind = {
            "delivered": "delivered",
            "complained": "complaint",
            "unsubscribed": "unsubscribe",
        }.get(name, "other")
    headers = (data.get("message") or {}).get("headers") or {}
    message_id = str(headers.get("message-id", ""))
    if message_id and not message_id.startswith("<"):
        message_id = f"<{message_id}>"  # Mailgun quotes it without the angle brackets
    code = str(status.get("code", ""))
    enhanced = str(status.get("enhanced-code", "") or "")
    return ProviderEvent(
        kind,
        str(data.get("id") or token),
        str(data.get("recipient", "")),
        message_id=message_id,
        envelope_sender=str((data.get("envelope") or {}).get("sender", "")),
        status=enhanced or ("5.0.0" if code.startswith("5") else "4.0.0" if code else ""),
        detail=str(status.get("description") or status.get("message") or name),
    )
