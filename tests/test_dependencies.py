"""No dead surface: every dependency is imported, every marker used, every error raised."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import mailer.errors

ROOT = Path(__file__).resolve().parent.parent

#: Distribution name → the module it provides, where the two differ.
MODULE_OF = {
    "psycopg": "psycopg",
    "email-validator": "email_validator",
    "css-inline": "css_inline",
    "argon2-cffi": "argon2",
    "dkimpy": "dkim",
    "pytest-timeout": "pytest_timeout",
}

#: Dependencies no module imports by name, and why they are needed all the same.
USED_INDIRECTLY = {
    "psycopg": "SQLAlchemy's postgresql+psycopg driver (mailer/db.py names it)",
    "python-multipart": "Starlette parses form posts (preferences, one-click POST) with it",
    "pytest-timeout": "the pytest plugin behind `timeout =` in pyproject.toml",
    "httpx": "Starlette's TestClient (tests/test_web.py) runs on it",
    "httpx2": "Starlette's TestClient prefers it and warns (an error here) without it",
    "ruff": "scripts/check",
    "mypy": "scripts/check",
    "schemathesis": "tests/test_api_schema.py runs its command line against the running API",
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _imported_modules(*folders: str) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def _names(requirements: list[str]) -> list[str]:
    return [re.split(r"[\[<>=~!; ]", req, maxsplit=1)[0] for req in requirements]


def test_every_runtime_dependency_is_imported_by_mailer_or_workers() -> None:
    imported = _imported_modules("mailer", "workers")
    unused = [
        name
        for name in _names(_pyproject()["project"]["dependencies"])
        if MODULE_OF.get(name, name.replace("-", "_")) not in imported
        and name not in USED_INDIRECTLY
    ]
    assert unused == [], f"dependencies nothing imports: {unused}; remove them from pyproject.toml"


def test_every_test_dependency_is_imported_by_the_tests() -> None:
    imported = _imported_modules("tests")
    unused = [
        name
        for name in _names(_pyproject()["project"]["optional-dependencies"]["test"])
        if MODULE_OF.get(name, name.replace("-", "_")) not in imported
        and name not in USED_INDIRECTLY
    ]
    assert unused == []


def test_every_declared_pytest_marker_is_used() -> None:
    declared = [m.split(":")[0] for m in _pyproject()["tool"]["pytest"]["ini_options"]["markers"]]
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
    unused = [m for m in declared if f"mark.{m}" not in text]
    assert unused == [], f"markers declared and never used: {unused}"


def test_every_error_class_is_raised_somewhere() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "mailer").rglob("*.py"))
    errors = [
        name
        for name, value in vars(mailer.errors).items()
        if isinstance(value, type)
        and issubclass(value, mailer.errors.MailerError)
        and value is not mailer.errors.MailerError
    ]
    never = [name for name in errors if not re.search(rf"raise {name}\b", source)]
    assert never == [], f"error classes never raised: {never}"
