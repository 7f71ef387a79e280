"""Which key makes address hashes: fixed once per database, never rotated with the token key.

Tokens (unsubscribe links, VERP addresses, Message-IDs) are checked against every configured
key, so MAILER_SECRET_KEY can rotate. Address hashes cannot: opt-outs and suppressions match on
them and outlive the addresses they were made from. The database therefore records the id of
the key its hashes were made with (table `key_ids`), and every start picks, among
MAILER_ADDRESS_HASH_KEY, MAILER_SECRET_KEY and MAILER_OLD_SECRET_KEYS, the key with that id.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import cast

from sqlalchemy import Engine, Table, select

from mailer.addresses import address_hash
from mailer.config import Secret, Settings
from mailer.db import insert_ignoring, read_only
from mailer.errors import ConfigError
from mailer.models import Contact, KeyId, utcnow

#: The `key_ids.purpose` of the address-hash key.
ADDRESS_HASH = "address_hash"


def key_id(key: str) -> str:
    """A public name for `key`: equal keys, equal ids; the id reveals nothing of the key."""
    return hmac.new(key.encode(), b"mailer.key-id.v1", hashlib.sha256).hexdigest()[:16]


def _candidates(settings: Settings) -> list[tuple[str, Secret]]:
    named = [("MAILER_ADDRESS_HASH_KEY", settings.address_hash_key)]
    named.append(("MAILER_SECRET_KEY", settings.secret_key))
    named += [("MAILER_OLD_SECRET_KEYS", k) for k in settings.old_secret_keys]
    return [(name, key) for name, key in named if key]


def address_hash_key(engine: Engine, settings: Settings, *, record: bool = False) -> str:
    """The key this database's address hashes are made with; ConfigError if none configured is.

    With `record`, a database that names no key yet records the one chosen: the key its
    existing contacts were hashed with if any, else MAILER_ADDRESS_HASH_KEY, else
    MAILER_SECRET_KEY.
    """
    candidates = _candidates(settings)
    with read_only(engine) as conn:
        stored = conn.scalar(select(KeyId.key_id).where(KeyId.purpose == ADDRESS_HASH))
        row = conn.execute(select(Contact.email, Contact.address_hash).limit(1)).first()
        sample = (row[0], row[1]) if row is not None else None
    if stored is None:
        chosen = _key_of_existing_hashes(candidates, sample)
        if record:
            with engine.begin() as conn:
                # two processes starting at once both try; the first one's row stands
                conn.execute(
                    insert_ignoring(conn, cast(Table, KeyId.__table__)),
                    [{"purpose": ADDRESS_HASH, "key_id": key_id(chosen), "created_at": utcnow()}],
                )
            return address_hash_key(engine, settings)
        return chosen
    for _name, key in candidates:
        if hmac.compare_digest(key_id(key.reveal()), stored):
            return key.reveal()
    raise ConfigError(
        f"the address hashes in this database were made with the key whose id is {stored}, "
        "and none of MAILER_ADDRESS_HASH_KEY, MAILER_SECRET_KEY or MAILER_OLD_SECRET_KEYS is "
        "that key; opt-outs and suppressions would stop matching. Set MAILER_ADDRESS_HASH_KEY "
        "to the secret key this database was first used with (or put it back in "
        "MAILER_OLD_SECRET_KEYS)"
    )


def _key_of_existing_hashes(
    candidates: list[tuple[str, Secret]], sample: tuple[str, str] | None
) -> str:
    if sample is not None:
        email, stored_hash = sample
        for _name, key in candidates:
            if hmac.compare_digest(address_hash(key.reveal(), email), stored_hash):
                return key.reveal()
        raise ConfigError(
            "the contacts in this database were hashed with a key that none of "
            "MAILER_ADDRESS_HASH_KEY, MAILER_SECRET_KEY or MAILER_OLD_SECRET_KEYS is; set "
            "MAILER_ADDRESS_HASH_KEY to the secret key this database was first used with"
        )
    return candidates[0][1].reveal() if candidates else ""
