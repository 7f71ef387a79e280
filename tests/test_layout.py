"""Where things live: the CLI parses and prints, the core does the work."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: What a command may take from SQLAlchemy and the models: type hints and the clock, no SQL.
_ALLOWED = {("sqlalchemy.orm", "Session"), ("mailer.models", "utcnow")}
_QUERYING = re.compile(r"\.(execute|scalars?|query)\(")


def _imported_names(path: Path) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update((alias.name, "*") for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update((node.module, alias.name) for alias in node.names)
    return found


def test_the_cli_runs_no_sql_of_its_own() -> None:
    # a query in a command is domain logic the web app and the API would have to copy
    offenders: dict[str, list[str]] = {}
    for path in sorted((ROOT / "mailer" / "cli").glob("*.py")):
        names = sorted(
            f"{module}.{name}"
            for module, name in _imported_names(path) - _ALLOWED
            if module.split(".")[0] == "sqlalchemy" or module == "mailer.models"
        )
        names += _QUERYING.findall(path.read_text())
        if names:
            offenders[path.name] = names
    assert offenders == {}


def test_the_cli_builds_no_recipient_or_sender_of_its_own() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "mailer" / "cli").glob("*.py"))
    assert "Recipient(" not in text and "SenderIdentity(" not in text
