"""Recipient tokens: the signed, opaque part of unsubscribe and preference links.

A token names a contact, the category of the mail it came in and the send it came from. It is
signed with MAILER_SECRET_KEY (older keys in MAILER_OLD_SECRET_KEYS still verify, for key
rotation) and never expires: CAN-SPAM wants the link to work at least 30 days after sending;
ours works for as long as the contact exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import TokenError

_SALT = "mailer.recipient-token.v1"
_CATEGORY_CODES = {c: i for i, c in enumerate(Category)}
_CODE_CATEGORIES = dict(enumerate(Category))


@dataclass(frozen=True)
class RecipientToken:
    contact_id: int
    category: Category
    send_id: int  #: 0 when the link did not come from a logged send


class TokenSigner:
    """Makes and reads recipient tokens; build one per process or campaign, not per message."""

    def __init__(self, settings: Settings) -> None:
        # itsdangerous signs with the last key and accepts any of them.
        keys = [k.reveal() for k in reversed(settings.old_secret_keys)]
        keys.append(settings.secret_key.reveal())
        self._serializer = URLSafeSerializer(keys, salt=_SALT)

    def make(self, contact_id: int, category: Category | str, send_id: int = 0) -> str:
        code = _CATEGORY_CODES[Category(category)]
        return str(self._serializer.dumps([contact_id, code, send_id]))

    def read(self, token: str) -> RecipientToken:
        """Raise TokenError for anything but an intact token we signed."""
        try:
            data = self._serializer.loads(token)
        except BadSignature as exc:
            raise TokenError("the link is not valid") from exc
        try:
            contact_id, code, send_id = data
            return RecipientToken(int(contact_id), _CODE_CATEGORIES[int(code)], int(send_id))
        except (TypeError, ValueError, KeyError) as exc:
            raise TokenError("the link is not valid") from exc
