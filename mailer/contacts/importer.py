"""`import_contacts`: read a contacts CSV file, check every row, upsert organizations and contacts.

One transaction: a file with a bad row imports nothing (unless `skip_invalid`), and a failure
half-way leaves the database as it was. Rows are checked in Python and written with Core
executemany statements; no ORM object is built per row.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailer.access.actor import Actor, audit, require
from mailer.contacts import columns as cols
from mailer.contacts.rows import (
    ParseCache,
    ParsedRow,
    check_across_rows,
    parse_row,
    resolve_account_managers,
)
from mailer.contacts.scope import restrict_to_manager
from mailer.contacts.store import write_rows
from mailer.csvfiles import csv_writer
from mailer.errors import ContactImportError, RowProblem
from mailer.runtime import Runtime

#: Called as progress(stage, done, total) while a file is checked and written.
Progress = Callable[[str, int, int], None]

#: How many rows pass between two progress calls.
PROGRESS_EVERY = 2000


@dataclass
class ImportReport:
    """What an import did (or, for a dry run, would do)."""

    path: str
    #: Rows read from the file (the header not counted).
    rows: int = 0
    #: Rows written (or, for a dry run, that would be): `rows` less the rejected ones.
    imported: int = 0
    organizations_created: int = 0
    organizations_updated: int = 0
    organizations_unchanged: int = 0
    contacts_created: int = 0
    contacts_updated: int = 0
    contacts_unchanged: int = 0
    users_created: int = 0
    rejected: int = 0
    rejects_path: str | None = None
    is_dry_run: bool = False
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return (
            self.organizations_created
            + self.organizations_updated
            + self.contacts_created
            + self.contacts_updated
            + self.users_created
        )

    def counts(self) -> dict[str, int]:
        data = asdict(self)
        return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["problems"] = [asdict(p) for p in self.problems]
        return data


def default_rejects_path(path: str | Path) -> Path:
    """`contacts.csv` → `contacts.rejected.csv`, next to the input."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rejected.csv")


def read_text(path: str | Path) -> str:
    """The file decoded as UTF-8 (a BOM is dropped); ContactImportError names a bad line."""
    data = Path(path).read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ContactImportError(
            str(path), "the file is UTF-16 encoded: save it as UTF-8 (CSV UTF-8) and import again"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ContactImportError(
            str(path),
            f"line {line}: not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8 (CSV UTF-8) and import again",
        ) from exc


def read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The checked header and the data records, each with the file line it starts on."""
    name = str(path)
    text = read_text(path)
    if not text.strip():
        raise ContactImportError(
            name, f"the file is empty: expected a header line with {', '.join(cols.REQUIRED)} …"
        )
    # not str.splitlines(): it also breaks on \x1c, \x85, \u2028 … inside quoted cells
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    try:
        raw_header = next(reader)
        header = cols.check_header(name, raw_header)
        start = reader.line_num + 1
        for cells in reader:
            if any(c.strip() for c in cells):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ContactImportError(name, f"line {reader.line_num}: not valid CSV ({exc})") from exc
    # one search over the whole text first: most files have nothing, and then no cell is read
    if cols.SSN_ANYWHERE.search(text) or cols.EMPLOYEE_VALUE.search(text):
        _refuse_employee_cells(name, header, records)
    return header, records


def _refuse_employee_cells(
    path: str, header: list[str], records: list[tuple[int, list[str]]]
) -> None:
    for line, cells in records:
        for column, cell in zip(header, cells, strict=False):
            found = cols.employee_data_in_cell(column, cell)
            if found:
                raise cols.EmployeeDataError(
                    path,
                    f"refused: line {line}, column {column!r} holds {found}; this service "
                    "never stores employee information (CPI privacy policy). Remove it from "
                    "the file; nothing was imported",
                )


def import_contacts(
    rt: Runtime,
    path: str | Path,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    check_deliverability: bool = False,
    actor: Actor,
    progress: Progress | None = None,
) -> ImportReport:
    """Import `path` as `actor`; raise ContactImportError (nothing written) when it cannot be
    imported.

    Admins import anything; an account manager only rows of their own clients (see
    `mailer.contacts.scope`); marketing reads contacts but never imports them.

    With `skip_invalid` the good rows are imported and the bad ones written with their reasons
    to `rejects_path` (default `<name>.rejected.csv` next to the file). A refused file is
    recorded in the audit log (file name, reason, number of bad rows; never cell values).
    """
    with rt.sessions() as session:
        require(session, actor, "contacts.import", object_type="file", object_id=Path(path).name)
    try:
        return _import(
            rt, path, dry_run, skip_invalid, rejects_path, check_deliverability, actor, progress
        )
    except ContactImportError as exc:
        if not dry_run:
            _record_refusal(rt, path, exc, actor)
        raise


def _record_refusal(rt: Runtime, path: str | Path, exc: ContactImportError, actor: Actor) -> None:
    message = str(exc).removeprefix(f"{exc.path}: ")
    with rt.sessions.begin() as session:
        audit(
            session,
            actor,
            "contacts.import_refused",
            object_type="file",
            object_id=Path(path).name[:100],
            path=str(Path(path).resolve()),
            reason=message[:500],
            bad_rows=len({p.row for p in exc.problems}),
            is_employee_data=isinstance(exc, cols.EmployeeDataError),
        )


def _import(
    rt: Runtime,
    path: str | Path,
    dry_run: bool,
    skip_invalid: bool,
    rejects_path: str | Path | None,
    check_deliverability: bool,
    actor: Actor,
    progress: Progress | None,
) -> ImportReport:
    name = str(path)
    header, records = read_rows(path)
    report = ImportReport(path=name, rows=len(records), is_dry_run=dry_run)
    rows = _parse_all(rt, header, records, check_deliverability, progress)
    now = dt.datetime.now(dt.UTC)
    with rt.sessions() as session:
        txn = session.begin()
        try:
            restrict_to_manager(session, rows, actor)
            new_users = resolve_account_managers(session, rows, actor.username)
            check_across_rows(rows)
            bad = [r for r in rows if r.problems]
            report.problems = sorted((p for r in bad for p in r.problems), key=_problem_order)
            if bad and not skip_invalid:
                raise ContactImportError(
                    name,
                    f"{len(bad)} of {len(rows)} rows are invalid, so nothing was imported; fix "
                    "them (each is listed) or import the good rows with --skip-invalid",
                    report.problems,
                )
            report.rejected = len(bad)
            if bad and not dry_run:  # a dry run writes nothing, the rejects file included
                target = Path(rejects_path) if rejects_path else default_rejects_path(path)
                _write_rejects(target, header, bad)
                report.rejects_path = str(target)
            good = [r for r in rows if not r.problems]
            report.imported = len(good)
            report.users_created = len(new_users)
            write_rows(session.connection(), header, good, now, report, progress)
            if not dry_run:
                details: dict[str, Any] = {"path": str(Path(name).resolve()), **report.counts()}
                audit(
                    session,
                    actor,
                    "contacts.import",
                    object_type="file",
                    object_id=Path(name).name[:100],
                    **details,
                )
                txn.commit()
            else:
                txn.rollback()
        except BaseException:
            if txn.is_active:
                txn.rollback()
            raise
    return report


def _parse_all(
    rt: Runtime,
    header: list[str],
    records: list[tuple[int, list[str]]],
    check_deliverability: bool,
    progress: Progress | None,
) -> list[ParsedRow]:
    rows = []
    total = len(records)
    cache = ParseCache(header, check_deliverability=check_deliverability)
    for i, (line, cells) in enumerate(records, 1):
        rows.append(parse_row(line, cells, rt.hash_address, cache))
        if progress and (i % PROGRESS_EVERY == 0 or i == total):
            progress("checking", i, total)
    return rows


def _problem_order(problem: RowProblem) -> tuple[int, int]:
    return problem.row, cols.KNOWN.index(problem.column) if problem.column in cols.KNOWN else -1


def _write_rejects(target: Path, header: list[str], bad: list[ParsedRow]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8", newline="") as out:
        writer = csv_writer(out)
        writer.writerow([*header, "reason"])
        for row in bad:
            reasons = "; ".join(f"line {p.row}, {p.column}: {p.reason}" for p in row.problems)
            cells = (row.cells + [""] * len(header))[: len(header)]
            writer.writerow([*cells, reasons])
