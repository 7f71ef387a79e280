from __future__ import annotations

import datetime as dt

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
