"""Where things live: the CLI parses and prints, the core does the work."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_cli_runs_no_sql_of_its_own() -> None:
    # a query in a command is domain logic the web app and the API would have to copy
    offenders = {
        path.name: sorted(
            name
            for name in _imports(path)
            if name.split(".")[0] == "sqlalchemy" or name == "mailer.models"
        )
        for path in sorted((ROOT / "mailer" / "cli").glob("*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_cli_builds_no_recipient_or_sender_of_its_own() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "mailer" / "cli").glob("*.py"))
    assert "Recipient(" not in text and "SenderIdentity(" not in text
