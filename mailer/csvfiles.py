"""Writing CSV files that are safe to open in a spreadsheet.

A cell starting with `=`, `+`, `-` or `@` (or a tab or carriage return before one) is run as a
formula by Excel, LibreOffice and Google Sheets: `=HYPERLINK(…)` or `=cmd|' /C calc'!A0` from an
imported file would run on the machine of whoever opens our rejects file or coverage report.
Every CSV mailer writes goes through `csv_writer`/`dict_writer`, which write such a cell with a
leading `'` so the spreadsheet shows it as text (OWASP "CSV injection").
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """`value` as CSV cell text, with `'` before it if a spreadsheet would run it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _SafeWriter:
    def __init__(self, out: IO[str], **kwargs: Any) -> None:
        self._writer = csv.writer(out, **kwargs)

    def writerow(self, cells: Iterable[object]) -> None:
        self._writer.writerow([safe_cell(c) for c in cells])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for cells in rows:
            self.writerow(cells)


class _SafeDictWriter:
    def __init__(self, out: IO[str], fieldnames: Sequence[str], **kwargs: Any) -> None:
        self._writer = csv.DictWriter(out, fieldnames, **kwargs)
        self.fieldnames = list(fieldnames)

    def writeheader(self) -> None:
        self._writer.writeheader()

    def writerow(self, row: Mapping[str, object]) -> None:
        self._writer.writerow({k: safe_cell(v) for k, v in row.items()})

    def writerows(self, rows: Iterable[Mapping[str, object]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(out: IO[str], **kwargs: Any) -> _SafeWriter:
    """Like `csv.writer(out, **kwargs)`, every cell made safe for spreadsheets."""
    return _SafeWriter(out, **kwargs)


def dict_writer(out: IO[str], fieldnames: Sequence[str], **kwargs: Any) -> _SafeDictWriter:
    """Like `csv.DictWriter(out, fieldnames, **kwargs)`, every cell made safe."""
    return _SafeDictWriter(out, fieldnames, **kwargs)
