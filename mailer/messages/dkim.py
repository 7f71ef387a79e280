"""DKIM signing (dkimpy), relaxed/relaxed, with the signed headers listed explicitly.

dkimpy's default header list leaves out List-Unsubscribe-Post and Feedback-ID (STANDARDS.md
§5), so the builder passes the list it knows each message carries. Sign last: the exact bytes
returned here are what SMTP must send.
"""

from __future__ import annotations

from pathlib import Path

import dkim

from mailer.config import Settings
from mailer.errors import ConfigError


class DkimSigner:
    """Signs messages with one key; build once per campaign, the key is read once."""

    def __init__(self, selector: str, domain: str, private_key_pem: bytes, headers: list[str]):
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("ascii")
        self._key = private_key_pem
        self._headers = [name.encode("ascii") for name in headers]
        self.headers = list(headers)

    @classmethod
    def from_settings(cls, settings: Settings, headers: list[str]) -> DkimSigner | None:
        """The signer the settings ask for, or None when no key is configured."""
        if not settings.dkim_private_key_path:
            return None
        path = Path(settings.dkim_private_key_path)
        if not settings.dkim_selector:
            raise ConfigError("MAILER_DKIM_SELECTOR is empty but a DKIM key is configured")
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"MAILER_DKIM_PRIVATE_KEY_PATH={path}: cannot read: {exc}") from exc
        domain = settings.dkim_domain or settings.mail_domain
        return cls(settings.dkim_selector, domain, pem, headers)

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header prepended."""
        try:
            signature = dkim.sign(
                message,
                self._selector,
                self._domain,
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=self._headers,
                linesep=b"\r\n",
            )
        except dkim.KeyFormatError as exc:
            raise ConfigError(f"the DKIM private key is not usable: {exc}") from exc
        return signature + message
