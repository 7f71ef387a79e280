"""Secrets kept in the database, sealed: AES-256-GCM under keys derived from MAILER_SECRET_KEY.

A sealed value is text: `v1:<key id>:<nonce>:<ciphertext>` (nonce and ciphertext in unpadded
base64url; the key id is `mailer.keys.key_id` of the secret key it was sealed under, which
names the key without revealing it). Opening tries MAILER_SECRET_KEY, then every
MAILER_OLD_SECRET_KEYS, picked by that id, so the secret key can rotate: `Opened.is_current`
says when a value should be sealed again under today's key.

Each value is bound to the place it is stored (`where`, e.g. `users.totp_secret:42`) as
associated data, so a sealed value copied into another row does not open there.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailer.config import Settings
from mailer.errors import MailerError
from mailer.keys import key_id

#: The format version written first in every sealed value.
VERSION = "v1"
#: AES-GCM nonces are 96 bits; a random one per seal (2**32 seals per key stay far from reuse).
NONCE_BYTES = 12


class SealError(MailerError):
    """A sealed value cannot be opened: sealed under a key no longer configured, or altered."""


@dataclass(frozen=True)
class Opened:
    """A value opened from storage; `is_current` False means seal it again (old key, or clear)."""

    plaintext: str
    is_current: bool


def is_sealed(stored: str) -> bool:
    return stored.startswith(VERSION + ":")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    """Seals and opens values for one purpose (the key derivation keeps purposes apart)."""

    def __init__(self, secret_keys: list[str], *, purpose: str) -> None:
        """`secret_keys`: the current key first, then older ones still accepted for opening."""
        keys = [k for k in secret_keys if k]
        if not keys:
            raise SealError("no secret key to seal with: set MAILER_SECRET_KEY")
        self.purpose = purpose
        self._keys = [(key_id(k), self._derive(k)) for k in keys]

    @classmethod
    def from_settings(cls, settings: Settings, *, purpose: str) -> Sealer:
        keys = [settings.secret_key.reveal(), *(k.reveal() for k in settings.old_secret_keys)]
        return cls(keys, purpose=purpose)

    def _derive(self, key: str) -> bytes:
        # one AES key per (secret key, purpose): a TOTP key never decrypts anything else
        kdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"mailer.sealing.{VERSION}:{self.purpose}".encode(),
        )
        return kdf.derive(key.encode())

    @property
    def current_key_id(self) -> str:
        return self._keys[0][0]

    def seal(self, plaintext: str, *, where: str) -> str:
        """`plaintext` sealed under the current key, bound to `where`."""
        kid, key = self._keys[0]
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), where.encode())
        return f"{VERSION}:{kid}:{_b64(nonce)}:{_b64(sealed)}"

    def open(self, stored: str, *, where: str) -> Opened:
        """The plaintext of a sealed value. A value that is not sealed (written before sealing
        existed) is returned as it is, marked not current, so the caller seals it."""
        if not is_sealed(stored):
            return Opened(stored, is_current=False)
        parts = stored.split(":")
        if len(parts) != 4:
            raise SealError(f"the sealed value at {where} is malformed (expected 4 parts)")
        _version, kid, nonce, sealed = parts
        for index, (candidate_id, key) in enumerate(self._keys):
            if not hmac.compare_digest(candidate_id, kid):
                continue
            try:
                data = AESGCM(key).decrypt(_unb64(nonce), _unb64(sealed), where.encode())
            except (InvalidTag, ValueError) as exc:
                raise SealError(
                    f"the sealed value at {where} does not open with its key {kid}: it was "
                    "altered, or copied from another row"
                ) from exc
            return Opened(data.decode(), is_current=index == 0)
        raise SealError(
            f"the value at {where} was sealed with the key whose id is {kid}, which is neither "
            "MAILER_SECRET_KEY nor one of MAILER_OLD_SECRET_KEYS; put that key back in "
            "MAILER_OLD_SECRET_KEYS"
        )
