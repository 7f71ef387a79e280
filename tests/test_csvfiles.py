"""Every CSV mailer writes is safe to open in a spreadsheet (no formula injection)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest

from mailer.access import SYSTEM
from mailer.contacts.importer import import_contacts
from mailer.csvfiles import csv_writer, safe_cell
from mailer.runtime import Runtime
from tests.test_import import row, write_csv

ATTACKS = ["=cmd|' /C calc'!A0", '=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3",
           "@SUM(A1)", "\t=1", "\r=1"]  # fmt: skip


@pytest.mark.parametrize("value", ATTACKS)
def test_a_cell_that_a_spreadsheet_would_run_is_written_as_text(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["Cascade Builders", "", "97702", "a=b", "x-y", 42, None, True])
def test_other_cells_are_written_as_they_are(value: object) -> None:
    assert safe_cell(value) == ("" if value is None else str(value))


def test_the_rejects_file_neutralizes_formulas(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1, email=ATTACKS[0], title=ATTACKS[1])])
    target = tmp_path / "rejects.csv"
    import_contacts(rt, path, skip_invalid=True, rejects_path=target, actor=SYSTEM)
    [rejected] = list(csv.DictReader(target.open(encoding="utf-8")))
    assert rejected["email"] == "'" + ATTACKS[0]
    assert rejected["title"] == "'" + ATTACKS[1]


def test_the_policy_coverage_csv_neutralizes_formulas(tmp_path: Path) -> None:
    from mailer.cli.policy import _write_csv

    client = {"external_id": "ORG-1", "name": ATTACKS[1], "account_manager": "@boss"}
    report = SimpleNamespace(clients=[SimpleNamespace(as_dict=lambda: client)])
    _write_csv(report, tmp_path / "c.csv")  # type: ignore[arg-type]
    [written] = list(csv.DictReader((tmp_path / "c.csv").open(encoding="utf-8")))
    assert (written["name"], written["account_manager"]) == ("'" + ATTACKS[1], "'@boss")


def test_csv_writer_neutralizes_every_row(tmp_path: Path) -> None:
    with (tmp_path / "x.csv").open("w", newline="") as out:
        writer = csv_writer(out)
        writer.writerow(["name", "value"])
        writer.writerows([["=1+1", "ok"]])
    assert (tmp_path / "x.csv").read_bytes() == b"name,value\r\n'=1+1,ok\r\n"


def test_no_module_writes_csv_around_the_safe_writer() -> None:
    root = Path(__file__).resolve().parent.parent
    offenders = [
        str(path.relative_to(root))
        for folder in ("mailer", "workers")
        for path in (root / folder).rglob("*.py")
        if path.name != "csvfiles.py"
        and ("csv.writer(" in path.read_text() or "csv.DictWriter(" in path.read_text())
    ]
    assert offenders == [], "write CSV with mailer.csvfiles.csv_writer/dict_writer"
