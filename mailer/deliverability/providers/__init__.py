"""Relay providers' event webhooks: each verifies its provider's signature, refuses anything
unsigned or stale, and turns the payload into `ProviderEvent`s that `apply_provider_events`
acts on through the same code as `mailer inbound` (mailer.inbound.bounces).

| provider | how a request is proven                                         | module      |
| -------- | --------------------------------------------------------------- | ----------- |
| ses      | Amazon SNS: RSA signature over the canonical message, with the  | `ses`       |
|          | certificate fetched only from MAILER_SES_CERT_URL_PATTERN       |             |
| sendgrid | ECDSA P-256 over timestamp + body (Event Webhook signing key)   | `sendgrid`  |
| postmark | basic auth + the X-Mailer-Webhook-Secret header                  | `postmark`  |
| mailgun  | HMAC-SHA256 of timestamp + token, each token taken once         | `mailgun`   |
"""

from mailer.deliverability.providers.base import (
    PROVIDERS,
    ProviderEvent,
    WebhookRefused,
    apply_provider_events,
    verify_and_parse,
)

__all__ = [
    "PROVIDERS",
    "ProviderEvent",
    "WebhookRefused",
    "apply_provider_events",
    "verify_and_parse",
]
