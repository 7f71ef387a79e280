"""Recipient tokens: the signed, opaque part of unsubscribe and preference links.

A token names a contact, the category of the mail it came in and the send it came from. It is
signed with MAILER_SECRET_KEY (older keys in MAILER_OLD_SECRET_KEYS still verify, for key
rotation) and never expires: CAN-SPAM wants the link to work at least 30 days after sending;
ours works for as long as the contact exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import TokenError

_SALT = b"mailer.recipient-token.v1:"
#: A separate key domain for bounce tokens: a recipient token never verifies as one, nor back.
_BOUNCE_SALT = b"mailer.bounce-token.v1:"
_CATEGORY_CODES = {c: i for i, c in enumerate(Category)}
_CODE_CATEGORIES = dict(enumerate(Category))
#: Bytes of HMAC-SHA256 kept in a token: 128 bits, far beyond guessing.
_MAC_BYTES = 16


@dataclass(frozen=True)
class RecipientToken:
    contact_id: int
    category: Category
    send_id: int  #: 0 when the link did not come from a logged send


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


#: Hex digits of HMAC-SHA256 kept in a bounce token: 80 bits.
_BOUNCE_MAC_HEX = 20
_HEX_DIGITS = "0123456789abcdef"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Makes and reads recipient tokens; build one per process or campaign, not per message.

    A token is `payload.mac`: the payload is `contact:category:send` in base64url, the mac a
    truncated HMAC-SHA256 of it under the secret key. One HMAC per token (≈2 µs), where a
    general-purpose serializer derives its key again for every call.
    """

    def __init__(self, settings: Settings) -> None:
        current = settings.secret_key.reveal().encode()
        older = [k.reveal().encode() for k in settings.old_secret_keys]
        # prepared once: copying a keyed HMAC is cheaper than keying a new one per token
        self._signing = hmac.new(current, _SALT, hashlib.sha256)
        self._verifying = [hmac.new(k, _SALT, hashlib.sha256) for k in [current, *older]]
        self._bounce_signing = hmac.new(current, _BOUNCE_SALT, hashlib.sha256)
        self._bounce_verifying = [
            hmac.new(k, _BOUNCE_SALT, hashlib.sha256) for k in [current, *older]
        ]

    def make(self, contact_id: int, category: Category | str, send_id: int = 0) -> str:
        code = _CATEGORY_CODES[Category(category)]
        payload = _b64(f"{contact_id}:{code}:{send_id}".encode())
        return f"{payload}.{self._mac(self._signing, payload)}"

    def read(self, token: str) -> RecipientToken:
        """Raise TokenError for anything but an intact token we signed."""
        payload, dot, mac = token.partition(".")
        if not dot or not payload or not mac.isascii():
            raise TokenError("the link is not valid")
        if not any(hmac.compare_digest(self._mac(k, payload), mac) for k in self._verifying):
            raise TokenError("the link is not valid")
        try:
            contact, code, send = _unb64(payload).decode().split(":")
            parsed = RecipientToken(int(contact), _CODE_CATEGORIES[int(code)], int(send))
        except (ValueError, KeyError, UnicodeDecodeError, binascii.Error) as exc:
            raise TokenError("the link is not valid") from exc
        return parsed

    def make_bounce(self, send_id: int) -> str:
        """The VERP token of a send: `<send id in hex>-<mac>`, lowercase letters and digits.

        Lowercase because some relays fold the local part's case; it names the send only, never
        the address, and only we can make one (80 bits of HMAC-SHA256 under the secret key).
        """
        payload = f"{send_id:x}"
        mac = self._bounce_signing.copy()
        mac.update(payload.encode())
        return f"{payload}-{mac.hexdigest()[:_BOUNCE_MAC_HEX]}"

    def read_bounce(self, token: str) -> int:
        """The send id of a VERP token we made; TokenError for anything else."""
        payload, dash, mac = token.lower().partition("-")
        if not dash or not 0 < len(payload) <= 16 or payload.strip(_HEX_DIGITS):
            raise TokenError("not a bounce token")
        if not mac.isascii():  # compare_digest refuses non-ASCII text
            raise TokenError("not a bounce token")
        for keyed in self._bounce_verifying:
            expected = keyed.copy()
            expected.update(payload.encode())
            if hmac.compare_digest(expected.hexdigest()[:_BOUNCE_MAC_HEX], mac):
                return int(payload, 16)
        raise TokenError("not a bounce token")

    @staticmethod
    def _mac(keyed: hmac.HMAC, payload: str) -> str:
        mac = keyed.copy()
        mac.update(payload.encode())
        return _b64(mac.digest()[:_MAC_BYTES])
