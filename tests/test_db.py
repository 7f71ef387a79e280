from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from mailer import db
from mailer.errors import SchemaBehindError
from mailer.models import Base, Organization
from mailer.runtime import Runtime, open_runtime


def test_migrations_create_exactly_the_models(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_schema_check_names_the_command_to_run(tmp_path, settings) -> None:
    empty = settings.with_(database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SchemaBehindError, match="run `mailer db upgrade`"):
        open_runtime(empty)


def test_timestamps_come_back_timezone_aware(rt: Runtime, make_org) -> None:
    org = make_org()
    with rt.sessions() as s:
        loaded = s.scalars(select(Organization).where(Organization.id == org.id)).one()
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == dt.timedelta(0)


def test_current_database_passes_the_schema_check(rt: Runtime) -> None:
    db.check_schema(rt.engine)


def test_a_schema_check_logs_nothing_but_an_upgrade_still_says_what_it_runs(
    tmp_path, settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Given logging at INFO, as in a Dramatiq worker process
    caplog.set_level(logging.INFO)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    # When a fresh database is upgraded, then checked the way every worker thread checks it
    db.upgrade(engine)
    upgrade_lines = [r.getMessage() for r in caplog.records if r.name.startswith("alembic")]
    caplog.clear()
    for _ in range(3):
        db.check_schema(engine)
    # Then the upgrade names its steps, and the checks add no line at all
    assert any(line.startswith("Running upgrade") for line in upgrade_lines)
    assert not any(line.startswith("Context impl") for line in upgrade_lines)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []
    engine.dispose()


def test_the_start_up_schema_check_agrees_with_alembic_without_importing_it(
    rt: Runtime, tmp_path
) -> None:
    # the migration files name the head Alembic finds
    assert db._head_from_files() == db.head_revision()
    # a database one migration behind is refused, naming both revisions
    behind = db.make_engine(f"sqlite:///{tmp_path / 'behind.db'}")
    db.upgrade(behind, "0009")
    with pytest.raises(SchemaBehindError) as refused:
        db.check_schema(behind)
    assert (refused.value.current, refused.value.head) == ("0009", db.head_revision())
    behind.dispose()
    # a command's start (import the CLI, check the schema) leaves Alembic unloaded
    probe = (
        "import sys; import mailer.cli; from mailer import db; "
        f"db.check_schema(db.make_engine({rt.settings.database_url!r})); "
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_pg_array_round_trips_through_postgresql(rt: Runtime) -> None:
    when = dt.datetime(2026, 11, 30, 5, 50, 1, 123456, tzinfo=dt.UTC)
    texts = ['a\\b "quoted", {braces}', "NULL", "", None, "é ünïcode", "  spaced  "]
    with rt.sessions() as s:
        with db.pipelined(s) as conn:
            cursor = conn.execute(
                "SELECT %s::bigint[], %s::int[], %s::text[], %s::bool[], %s::timestamptz[]",
                [
                    db.pg_array([1, 2**40]),
                    db.pg_array([None, 250]),
                    db.pg_array(texts),
                    db.pg_array([True, False, None]),
                    db.pg_array([when, None]),
                ],
            )
        row = cursor.fetchone()
    assert row == ([1, 2**40], [None, 250], texts, [True, False, None], [when, None])
    assert db.pg_array([]) == "{}"
