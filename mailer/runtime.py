"""The objects an entry point builds once: settings, engine, sessions."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mailer import db
from mailer.addresses import address_hash
from mailer.config import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    def hash_address(self, email: str) -> str:
        return address_hash(self.settings.secret_key.reveal(), email)

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(settings: Settings | None = None, *, check_schema: bool = True) -> Runtime:
    """Connect to the configured database; by default insist its schema is current."""
    settings = settings or Settings.from_env()
    engine = db.make_engine(settings.database_url)
    if check_schema:
        db.check_schema(engine)
    return Runtime(settings, engine, db.make_sessionmaker(engine))
