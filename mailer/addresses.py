"""Email addresses: normalization and the keyed hash that opt-outs and suppressions match on."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    normalized: str
    needs_smtputf8: bool


def normalize(raw: str, *, check_deliverability: bool = False) -> Address:
    """Validate and normalize `raw`; raises ValueError with email-validator's reason."""
    # imported here: every command loads this module (the runtime hashes addresses), few
    # normalize one, and email-validator's tables take a noticeable part of start-up
    from email_validator import EmailNotValidError, validate_email

    try:
        info = validate_email(
            raw.strip(), check_deliverability=check_deliverability, test_environment=False
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return Address(info.normalized, bool(info.smtputf8))


def address_hash(key: str, email: str) -> str:
    """HMAC-SHA256 of the lowercased address: stable, and useless without the key."""
    return hmac.new(key.encode(), email.strip().lower().encode(), hashlib.sha256).hexdigest()
