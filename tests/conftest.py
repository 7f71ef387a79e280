"""Shared fixtures: a migrated database per backend (SQLite and PostgreSQL), settings, factories.

Every test that takes `rt` (or a fixture built on it) runs once on SQLite and once on
PostgreSQL; the test ids say which (`[sqlite]`, `[postgresql]`). PostgreSQL gets a database of
its own per test session, so parallel runs never see each other's rows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from mailer import db
from mailer.addresses import address_hash
from mailer.config import Settings
from mailer.models import Base, Contact, Organization, User
from mailer.runtime import Runtime
from tests import required_tools

pytest_plugins = [
    "tests.smtp_fixtures",
    "tests.delivery_fixtures",
    "tests.web_fixtures",
    "tests.http_fixtures",
]

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "MAILER_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_SECRET = "test-secret-key-0123456789"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test session's own, dropped at the end."""
    name = f"mailer_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (faster than migrating per test)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "mailer.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _truncate_postgres(url: str) -> None:
    engine = db.make_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own, dropped at the end."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    name = f"mailer_blank_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        _truncate_postgres(url)
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "mailer.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "MAILER_DATABASE_URL": database_url,
            "MAILER_VAR_DIR": str(tmp_path / "var"),
            "MAILER_SECRET_KEY": TEST_SECRET,
            "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
            "MAILER_AUDIENCES_DIR": str(ROOT / "audiences"),
            "MAILER_USER": "tester",
        },
        env_file=None,
    )


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    engine = db.make_engine(settings.database_url)
    runtime = Runtime(settings, engine, db.make_sessionmaker(engine))
    yield runtime
    runtime.close()


@pytest.fixture
def session(rt: Runtime) -> Iterator[Any]:
    with rt.sessions() as s:
        yield s


_counter = itertools.count(1)


@pytest.fixture
def make_user(rt: Runtime) -> Callable[..., User]:
    def make(**kw: Any) -> User:
        n = next(_counter)
        values: dict[str, Any] = {
            "username": f"user{n}",
            "display_name": f"User {n}",
            "email": f"user{n}@cpi.example",
            "phone": "541-555-0100",
            "role": "admin",
        }
        values.update(kw)
        with rt.sessions.begin() as s:
            user = User(**values)
            s.add(user)
        return user

    return make


@pytest.fixture
def make_org(rt: Runtime) -> Callable[..., Organization]:
    def make(**kw: Any) -> Organization:
        n = next(_counter)
        values: dict[str, Any] = {
            "external_id": f"ORG-{n:06d}",
            "kind": "client",
            "name": f"Example Org {n}",
            "industry": "healthcare",
            "benefit_eligible_employees": 120,
            "city": "Bend",
            "state": "OR",
            "postal_code": "97702",
            "country": "US",
            "agreement_started_on": dt.date(2020, 1, 1),
        }
        values.update(kw)
        with rt.sessions.begin() as s:
            org = Organization(**values)
            s.add(org)
        return org

    return make


@pytest.fixture
def make_contact(rt: Runtime, make_org: Callable[..., Organization]) -> Callable[..., Contact]:
    """A contact (and, unless `organization` or `organization_id` is given, a client org)."""

    def make(**kw: Any) -> Contact:
        n = next(_counter)
        org = kw.pop("organization", None)
        if "organization_id" not in kw:
            org = org or make_org()
            kw["organization_id"] = org.id
        email = kw.pop("email", f"contact{n}@client{n}.example")
        values: dict[str, Any] = {
            "email": email,
            "address_hash": address_hash(rt.settings.secret_key.reveal(), email),
            "first_name": "Pat",
            "last_name": f"Contact{n}",
            "title": "HR Director",
            "is_primary": False,
            "status": "active",
        }
        values.update(kw)
        with rt.sessions.begin() as s:
            contact = Contact(**values)
            s.add(contact)
        return contact

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many tests ran on each database backend, so the output shows both did."""
    counts = {name: 0 for name in BACKENDS}
    for report in terminalreporter.stats.get("passed", []):
        if report.when != "call":
            continue
        for name in BACKENDS:
            ids = report.nodeid.rpartition("[")[2].rstrip("]").split("-")
            if name in ids:
                counts[name] += 1
    shown = ", ".join(f"{name}: {n} passed" for name, n in counts.items())
    terminalreporter.write_line(f"database backends: {shown}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """As root or in CI (where scripts/test installs every program), a skip is a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and required_tools.must_not_skip():
        report.outcome = "failed"
        report.longrepr = (
            f"skipped as root or in CI, where no test may be skipped: {report.longrepr}"
        )
