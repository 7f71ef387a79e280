"""Saved audiences: one TOML file each under `audiences/`, edited by marketing.

    # audiences/oregon-healthcare-prospects.toml
    description = "Healthcare prospects in Oregon with 50 to 500 employees"
    rule = '''
    kind = prospect and industry = "healthcare"
    and employees between 50 and 500 and state = "OR"
    '''

The file name without `.toml` is the audience's name. Rule errors point at the line and
column in the file itself.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mailer.errors import NotFoundError, RuleError
from mailer.rules.nodes import Rule
from mailer.rules.parser import parse_rule

#: Keys a saved audience file may have.
KEYS = {"description", "rule"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_RULE_KEY = re.compile(r"^\s*rule\s*=\s*('''|\"\"\"|'|\")", re.MULTILINE)


@dataclass(frozen=True)
class Audience:
    """A saved audience: its name (the file stem), description, rule text and file."""

    name: str
    description: str
    rule_text: str
    path: Path
    rule: Rule | None = field(default=None, compare=False, repr=False)


def load_audiences(directory: Path) -> dict[str, Audience]:
    """Every `*.toml` audience in `directory`, parsed and checked; RuleError names a bad file."""
    if not directory.is_dir():
        return {}
    return {a.name: a for a in (load_audience(p) for p in sorted(directory.glob("*.toml")))}


def get_audience(directory: Path, name: str) -> Audience:
    """The saved audience `name`, after loading and checking every file in `directory`.

    Raises RuleError for any bad file, NotFoundError (with the nearest name) for an unknown one.
    """
    audiences = load_audiences(directory)
    if name not in audiences:
        close = difflib.get_close_matches(name, list(audiences), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; saved: {', '.join(audiences)}"
        raise NotFoundError(f"no saved audience {name!r} in {directory}{hint}")
    return audiences[name]


def load_audience(path: Path) -> Audience:
    """One audience file, parsed and checked."""
    name = path.stem
    if not _NAME.match(name):
        raise RuleError(
            f"audience file name {path.name!r} must be lowercase letters, digits, - and _ "
            "(it is the audience's name)",
            source=str(path),
        )
    try:
        content = path.read_text(encoding="utf-8")
        data = tomllib.loads(content)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuleError(f"cannot read the audience file: {exc}", source=str(path)) from exc
    unknown = set(data) - KEYS
    if unknown:
        raise RuleError(
            f"unknown key {sorted(unknown)[0]!r}; an audience file has description and rule",
            source=str(path),
        )
    for key in ("description", "rule"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise RuleError(f"{key!r} is missing or not a text value", source=str(path))
    rule_text: str = data["rule"]
    try:
        rule = parse_rule(rule_text, str(path))
    except RuleError as exc:
        raise _in_file(exc, content, rule_text) from exc.__cause__
    return Audience(name, data["description"].strip(), rule_text, path, rule)


def _in_file(exc: RuleError, content: str, rule_text: str) -> RuleError:
    """The same error with its line and column counted in the file, when the text maps 1:1."""
    match = _RULE_KEY.search(content)
    if match is None or not exc.line:
        return exc
    file_lines = content.splitlines()
    rule_lines = rule_text.splitlines() or [""]
    first_line = content.count("\n", 0, match.end()) + 1
    first_column = match.end() - content.rfind("\n", 0, match.end())
    if match.group(1) in ("'''", '"""') and content[match.end() : match.end() + 1] == "\n":
        first_line, first_column = first_line + 1, 1  # TOML drops the newline after '''
    line = first_line + exc.line - 1
    column = exc.column + (first_column - 1 if exc.line == 1 else 0)
    shown = file_lines[line - 1] if 0 < line <= len(file_lines) else None
    expected = rule_lines[exc.line - 1] if exc.line <= len(rule_lines) else ""
    offset = column - exc.column
    if shown is None or shown[offset : offset + len(expected)] != expected:
        return exc  # escapes in the TOML string moved things: keep rule-relative positions
    return RuleError(
        exc.message,
        source=exc.source,
        text=content,
        line=line,
        column=column,
        suggestion=exc.suggestion,
    )
