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
_CATEGORY_CODES: dict[str, int] = {c: i for i, c in enumerate(Category)}
_CODE_CATEGORIES = dict(enumerate(Category))
#: Bytes of HMAC-SHA256 kept in a token: 128 bits, far beyond guessing.
_MAC_BYTES = 16


@dataclass(frozen=True)
class RecipientToken:
    contact_id: int
    category: Category
    send_id: int  #: 0 when the link did not come from a logged send


#: base64 to base64url (RFC 4648 §5), applied to `b2a_base64` output directly: urlsafe_b64encode
#: does the same through two more Python calls.
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


#: Hex digits of HMAC-SHA256 kept in a bounce token: 80 bits.
_BOUNCE_MAC_HEX = 20
_HEX_DIGITS = "0123456789abcdef"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: RFC 2104's inner and outer pads, as translation tables over the padded key.
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
#: SHA-256's block size: RFC 2104 pads (or first hashes) the key to this many bytes.
_SHA256_BLOCK = 64


class PreparedHmac:
    """HMAC-SHA256 under one key, of a fixed prefix then each message, prepared once.

    The same digests as `hmac.new(key, prefix + data, sha256)`, computed per call as RFC 2104's
    two hashes from copies of the keyed inner and outer states: `hmac.HMAC.copy()` and its
    digest methods add ~1 µs of Python per call, and a message takes three of these MACs.
    """

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._inner.update(prefix)
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, data: bytes) -> str:
        return self.digest(data).hex()


class TokenSigner:
    """Makes and reads recipient tokens; build one per process or campaign, not per message.

    A token is `payload.mac`: the payload is `contact:category:send` in base64url, the mac a
    truncated HMAC-SHA256 of it under the secret key. One HMAC per token (≈2 µs), where a
    general-purpose serializer derives its key again for every call.
    """

    def __init__(self, settings: Settings) -> None:
        current = settings.secret_key.reveal().encode()
        older = [k.reveal().encode() for k in settings.old_secret_keys]
        # prepared once: copying a keyed state is cheaper than keying a new one per token
        self._signing = PreparedHmac(current, _SALT)
        self._verifying = [PreparedHmac(k, _SALT) for k in [current, *older]]
        self._bounce_signing = PreparedHmac(current, _BOUNCE_SALT)
        self._bounce_verifying = [PreparedHmac(k, _BOUNCE_SALT) for k in [current, *older]]

    def make(self, contact_id: int, category: Category | str, send_id: int = 0) -> str:
        code = _CATEGORY_CODES.get(category)  # a Category or its value; Category() costs ~0.5 µs
        if code is None:
            code = _CATEGORY_CODES[Category(category)]  # ValueError names an unknown category
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
        return f"{payload}-{self._bounce_signing.hexdigest(payload.encode())[:_BOUNCE_MAC_HEX]}"

    def read_bounce(self, token: str) -> int:
        """The send id of a VERP token we made; TokenError for anything else."""
        payload, dash, mac = token.lower().partition("-")
        if not dash or not 0 < len(payload) <= 16 or payload.strip(_HEX_DIGITS):
            raise TokenError("not a bounce token")
        if not mac.isascii():  # compare_digest refuses non-ASCII text
            raise TokenError("not a bounce token")
        for keyed in self._bounce_verifying:
            expected = keyed.hexdigest(payload.encode())[:_BOUNCE_MAC_HEX]
            if hmac.compare_digest(expected, mac):
                return int(payload, 16)
        raise TokenError("not a bounce token")

    @staticmethod
    def _mac(keyed: PreparedHmac, payload: str) -> str:
        return _b64(keyed.digest(payload.encode())[:_MAC_BYTES])
