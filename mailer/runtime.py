"""The objects an entry point builds once: settings, engine, sessions."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailer import db, keys
from mailer.addresses import address_hash
from mailer.config import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    #: Found on first use (see mailer.keys); never the token key by mere default.
    _address_key: str | None = field(default=None, init=False, repr=False)

    def hash_address(self, email: str) -> str:
        """The keyed hash opt-outs and suppressions match `email` on."""
        if self._address_key is None:
            self._address_key = keys.address_hash_key(self.engine, self.settings)
        return address_hash(self._address_key, email)

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(settings: Settings | None = None, *, check_schema: bool = True) -> Runtime:
    """Connect to the configured database; by default insist its schema is current."""
    settings = settings or Settings.from_env()
    engine = db.make_engine(settings.database_url)
    runtime = Runtime(settings, engine, db.make_sessionmaker(engine))
    if check_schema:
        db.check_schema(engine)
        # at start, so a key that matches no stored hash stops us before any mail goes out
        runtime._address_key = keys.address_hash_key(engine, settings, record=True)
    return runtime
