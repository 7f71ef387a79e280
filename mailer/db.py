"""Engines, sessions and the schema version check (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Result,
    Table,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import Settings
from mailer.errors import SchemaBehindError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

_MIGRATIONS = Path(__file__).parent / "migrations"
#: `revision = "0013"` or `down_revision = "0009"` (or `= None`) in a migration file.
_REVISION_LINE = re.compile(r'^(down_revision|revision)\s*=\s*(?:"([^"]+)"|None)\s*$', re.M)


def _is_worth_logging(record: logging.LogRecord) -> bool:
    # Every schema check (each worker thread opens a runtime) makes Alembic log which dialect it
    # uses and that DDL is transactional: two INFO lines each, nothing an operator acts on.
    # What a migration actually does ("Running upgrade …") still shows.
    return not str(record.msg).startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_is_worth_logging)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite defers BEGIN; we emit BEGIN IMMEDIATE ourselves. A deferred transaction
        # that reads and then writes fails at once with SQLITE_BUSY when another connection
        # wrote meanwhile (busy_timeout cannot help there); IMMEDIATE waits for the lock.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # a delivery thread holds two connections (claims, and results recorded in the background)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 30)
    return create_engine(parsed, **kwargs)


def _sqlite_begin(conn: Connection) -> None:
    # a read-only look (see read_only) must not wait for the write lock another
    # connection of this process may hold
    deferred = conn.get_execution_options().get("mailer_read_only", False)
    conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only; on SQLite it takes no write lock, so it can run while
    another session of the same process is in the middle of writing."""
    with engine.connect() as conn:
        yield conn.execution_options(mailer_read_only=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class HeldConnection:
    """Sessions on one connection a thread keeps for its life (PostgreSQL): no pool check-out
    and no ping per transaction. A dropped connection fails its statement instead (and is
    replaced on the next use), which `delivery.transactions.in_transaction` retries. Elsewhere
    (SQLite) the engine's pool as usual. Use from one thread at a time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self.sessions: sessionmaker[Session] = (
            cast(
                "sessionmaker[Session]",
                sessionmaker(class_=_HeldSession, expire_on_commit=False, held=self),
            )
            if engine.dialect.name == "postgresql"
            else make_sessionmaker(engine)
        )

    def connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._engine.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _HeldSession(Session):
    def __init__(self, *, held: HeldConnection, **kwargs: Any) -> None:
        kwargs["bind"] = held.connection()
        super().__init__(**kwargs)


@contextmanager
def pipelined(session: Session) -> Iterator[Any]:
    """The session's psycopg connection in pipeline mode (PostgreSQL only): what is executed
    in the block goes to the server in one round trip when the block ends, with the BEGIN of
    the session's transaction, and a `commit()` called in the block too. Errors come out as
    SQLAlchemy's, the connection invalidated when it was lost, as `Session.execute` does, so
    `delivery.transactions.in_transaction` retries them the same way."""
    conn = session.connection()
    raw: Any = conn.connection.driver_connection
    try:
        with raw.pipeline():
            yield raw
    except raw.Error as exc:
        is_lost = bool(raw.closed or raw.broken)
        if is_lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            None, None, exc, type(raw).Error, connection_invalidated=is_lost
        ) from exc


def pg_array(values: Iterable[object]) -> str:
    """PostgreSQL's text form of a one-dimensional array of `values`, for a parameter the
    statement casts (`%(ids)s::bigint[]`): None is NULL, an int as it is, anything else (str,
    datetime) quoted with its backslashes and double quotes escaped. psycopg's own list
    adaptation looks up a dumper for each element, the dearest part of a slice's claim and
    record parameters (docs/performance.md §8)."""
    return "{" + ",".join(map(_pg_element, values)) + "}"


def _pg_element(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session committed on success and rolled back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "postgresql"


@contextmanager
def index_scans_only(session: Session) -> Iterator[None]:
    """Within the session's transaction, keep PostgreSQL from reading a table sequentially
    (for a probe its stale statistics would send through the whole table); the setting the
    transaction had before comes back afterwards. Nothing on SQLite."""
    if not is_postgres(session):
        yield
        return
    before, _ = session.execute(
        text("SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)")
    ).one()
    try:
        yield
    finally:
        session.execute(text("SELECT set_config('enable_seqscan', :v, true)"), {"v": before})


#: The advisory lock of `send_log_writers` ("sendlog!" as a 64-bit number).
SEND_LOG_WRITERS = int.from_bytes(b"sendlog!", "big")


def send_log_writers(session: Session, *, alone: bool = False) -> None:
    """Until the session's transaction ends, hold the lock that keeps planning (shared:
    planners never wait for each other) and retention's purge (`alone`) apart.

    The send log has no foreign keys (models.Send): a row planned for a contact that a purge
    deletes meanwhile would keep the deleted contact's id and address. With the lock, a purge
    waits for the plans under way to commit before it chooses what to delete, so a contact
    about to be mailed counts as recent and stays; a plan waits for the purge, then no longer
    sees what it deleted. SQLite runs one writer at a time."""
    if is_postgres(session):
        how = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {how}(:key)"), {"key": SEND_LOG_WRITERS})


def insert_ignoring(bind: Connection | Session, table: Table) -> Any:
    """An INSERT … ON CONFLICT DO NOTHING statement for `table` in `bind`'s dialect."""
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table).on_conflict_do_nothing()


def insert_ignoring_duplicates(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL alike."""
    if not rows:
        return
    session.execute(insert_ignoring(session, table), rows)


def rows_changed(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed (Session.execute types its result too loosely)."""
    return cast(CursorResult[Any], result).rowcount


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def has_table(engine: Engine, name: str) -> bool:
    return inspect(engine).has_table(name)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_MIGRATIONS))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head", *, settings: Settings | None = None) -> None:
    """Apply migrations up to `revision`.

    With `settings`, migrations that seal stored secrets get the secret keys to do so now
    (otherwise mailer seals them when they are next used).
    """
    from alembic import command

    cfg = _alembic_config(engine)
    if settings is not None:
        cfg.attributes["secret_keys"] = [
            settings.secret_key.reveal(),
            *(k.reveal() for k in settings.old_secret_keys),
        ]
    command.upgrade(cfg, revision)


def check_schema(engine: Engine) -> None:
    """Raise SchemaBehindError unless the database is at the newest migration.

    Every process checks at start, so this reads the migration files and the version table
    itself rather than through Alembic, whose import alone is ~10 % of a command's start-up;
    Alembic decides when the files do not name a single head plainly.
    """
    head = _head_from_files() or head_revision()
    with engine.connect() as conn:
        stored = (
            list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
            if inspect(conn).has_table("alembic_version")
            else []
        )
    current = stored[0] if len(stored) == 1 else None
    if stored != [head]:
        raise SchemaBehindError(current, head)


def _head_from_files() -> str | None:
    """The revision no migration file names as its `down_revision`; None unless exactly one
    and every file states both plainly."""
    revisions: set[str] = set()
    parents: set[str | None] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        found = {name: value or None for name, value in _REVISION_LINE.findall(path.read_text())}
        if found.get("revision") is None or "down_revision" not in found:
            return None
        revisions.add(str(found["revision"]))
        parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None
