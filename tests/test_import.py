"""`mailer import`: each validation rule, idempotent upserts, all or nothing, the employee guard."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from mailer.access import SYSTEM, Actor
from mailer.addresses import normalize
from mailer.contacts import columns as cols
from mailer.contacts.importer import default_rejects_path, import_contacts
from mailer.contacts.rows import fast_normalize
from mailer.enums import Role
from mailer.errors import ContactImportError, EmployeeDataError
from mailer.models import AuditEvent, Contact, Organization, OrganizationTag
from mailer.runtime import Runtime

TESTER = Actor(user_id=None, username="tester", role=Role.ADMIN, via="cli")
DANA = Actor(user_id=None, username="dana", role=Role.ADMIN, via="cli")


def import_as_admin(rt: Runtime, path: Path, **kw: Any) -> Any:
    kw.setdefault("actor", SYSTEM)
    return import_contacts(rt, path, **kw)


HEADER = [
    "external_id", "kind", "organization_name", "industry", "benefit_eligible_employees",
    "street", "city", "state", "postal_code", "country", "account_manager",
    "agreement_started_on", "agreement_ended_on", "tags",
    "email", "first_name", "last_name", "title", "is_primary", "status",
]  # fmt: skip


def row(n: int = 1, **kw: str) -> dict[str, str]:
    values = {
        "external_id": f"ORG-{n:05d}",
        "kind": "client",
        "organization_name": f"Cascade Builders {n}",
        "industry": "construction",
        "benefit_eligible_employees": "120",
        "street": "1 Main St",
        "city": "Bend",
        "state": "OR",
        "postal_code": "97702",
        "country": "US",
        "account_manager": "",
        "agreement_started_on": "2021-03-01",
        "agreement_ended_on": "",
        "tags": "newsletter;wellness",
        "email": f"pat{n}@cascade{n}.example",
        "first_name": "Pat",
        "last_name": "Lee",
        "title": "HR Director",
        "is_primary": "true",
        "status": "active",
    }
    values.update(kw)
    return values


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    header = header or HEADER
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def table_snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    with rt.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in (Organization.__table__, Contact.__table__, OrganizationTag.__table__)
        }


def count(rt: Runtime, model: Any) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def problems_of(rt: Runtime, path: Path) -> list[Any]:
    with pytest.raises(ContactImportError) as info:
        import_as_admin(rt, path)
    return info.value.problems


def test_new_rows_create_organizations_contacts_and_tags(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(1, email="sam@cascade1.example",
                                                    is_primary="no"), row(2)])  # fmt: skip
    report = import_contacts(rt, path, actor=TESTER)
    assert (report.organizations_created, report.contacts_created) == (2, 3)
    with rt.sessions() as s:
        org = s.scalars(select(Organization).where(Organization.external_id == "ORG-00001")).one()
        assert org.benefit_eligible_employees == 120 and org.state == "OR"
        assert sorted(t.tag for t in org.tags) == ["newsletter", "wellness"]
        contact = s.scalars(select(Contact).where(Contact.email == "pat1@cascade1.example")).one()
        assert contact.is_primary and contact.organization_id == org.id
        assert contact.address_hash == rt.hash_address("pat1@cascade1.example")


def test_importing_the_same_file_twice_changes_nothing(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(n) for n in range(1, 30)])
    import_as_admin(rt, path)
    before = table_snapshot(rt)
    again = import_as_admin(rt, path)
    assert again.changes == 0
    assert (again.organizations_unchanged, again.contacts_unchanged) == (29, 29)
    assert table_snapshot(rt) == before


def test_a_changed_value_updates_only_its_organization(rt: Runtime, tmp_path: Path) -> None:
    import_as_admin(rt, write_csv(tmp_path / "a.csv", [row(1), row(2)]))
    report = import_as_admin(
        rt, write_csv(tmp_path / "b.csv", [row(1, benefit_eligible_employees="150"), row(2)])
    )
    assert (report.organizations_updated, report.organizations_unchanged) == (1, 1)
    assert report.contacts_updated == 0
    with rt.sessions() as s:
        assert s.scalar(select(Organization.benefit_eligible_employees).where(
            Organization.external_id == "ORG-00001")) == 150  # fmt: skip


def test_changed_tags_count_as_an_update_and_replace_the_set(rt: Runtime, tmp_path: Path) -> None:
    import_as_admin(rt, write_csv(tmp_path / "a.csv", [row(1)]))
    report = import_as_admin(rt, write_csv(tmp_path / "b.csv", [row(1, tags="cobra")]))
    assert report.organizations_updated == 1
    with rt.sessions() as s:
        assert list(s.scalars(select(OrganizationTag.tag))) == ["cobra"]


def test_email_differing_only_in_case_matches_the_same_contact(rt: Runtime, tmp_path: Path) -> None:
    import_as_admin(rt, write_csv(tmp_path / "a.csv", [row(1, email="Pat@Cascade1.example")]))
    report = import_as_admin(
        rt, write_csv(tmp_path / "b.csv", [row(1, email="pat@cascade1.example")])
    )
    assert (report.contacts_created, report.contacts_updated) == (0, 1)
    assert count(rt, Contact) == 1


def test_a_contact_can_move_to_another_organization(rt: Runtime, tmp_path: Path) -> None:
    import_as_admin(rt, write_csv(tmp_path / "a.csv", [row(1), row(2)]))
    moved = row(2, email="pat1@cascade1.example")
    report = import_as_admin(rt, write_csv(tmp_path / "b.csv", [moved]))
    assert report.contacts_updated == 1
    with rt.sessions() as s:
        contact = s.scalars(select(Contact).where(Contact.email == "pat1@cascade1.example")).one()
        assert contact.organization.external_id == "ORG-00002"


def test_columns_absent_from_the_file_keep_their_stored_values(rt: Runtime, tmp_path: Path) -> None:
    import_as_admin(rt, write_csv(tmp_path / "a.csv", [row(1)]))
    narrow = ["external_id", "kind", "organization_name", "email"]
    report = import_as_admin(rt, write_csv(tmp_path / "b.csv", [row(1)], header=narrow))
    assert report.changes == 0
    with rt.sessions() as s:
        org = s.scalars(select(Organization)).one()
        assert org.industry == "construction" and len(org.tags) == 2


def test_non_ascii_local_part_is_stored_with_the_smtputf8_flag(rt: Runtime, tmp_path: Path) -> None:
    import_as_admin(rt, write_csv(tmp_path / "a.csv", [row(1, email="josé.müller@acme.example",
                                                            first_name="José")]))  # fmt: skip
    with rt.sessions() as s:
        contact = s.scalars(select(Contact)).one()
        assert contact.needs_smtputf8 and contact.email == "josé.müller@acme.example"


BAD_CELLS = [
    ("email", "not-an-address", "not a valid email address"),
    ("email", "pat@", "not a valid email address"),
    ("benefit_eligible_employees", "-3", "whole number >= 0"),
    ("benefit_eligible_employees", "12.5", "whole number >= 0"),
    ("benefit_eligible_employees", "many", "whole number >= 0"),
    ("kind", "customer", "'client' or 'prospect'"),
    ("state", "XX", "not a US state code"),
    ("state", "Oregon", "not a US state code: did you mean OR (Oregon)?"),
    ("postal_code", "9770", "ZIP"),
    ("country", "USA", "two-letter"),
    ("agreement_started_on", "03/01/2021", "ISO 8601"),
    ("agreement_started_on", "2021-02-30", "not a calendar date"),
    ("agreement_ended_on", "2020-01-01", "ends before it starts"),
    ("is_primary", "maybe", "true or false"),
    ("status", "gone", "'active' or 'inactive'"),
    ("external_id", "", "external_id is required"),
    ("organization_name", "", "organization_name is required"),
    ("email", "", "email is required"),
    ("organization_name", "x" * 201, "longer than 200"),
    ("first_name", "Pat\x00", "control characters"),
    ("tags", "ok;" + "t" * 65, "longer than 64"),
]


@pytest.mark.parametrize(("column", "value", "reason"), BAD_CELLS)
def test_a_bad_cell_is_reported_with_line_column_value_and_reason(
    rt: Runtime, tmp_path: Path, column: str, value: str, reason: str
) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, **{column: value})])
    problems = problems_of(rt, path)
    assert [(p.row, p.column, p.value) for p in problems] == [(3, column, value)]
    assert reason in problems[0].reason
    assert count(rt, Organization) == 0


@pytest.mark.parametrize("value", ["1,200", "0", " 42 "])
def test_employee_counts_accept_whole_numbers(value: str) -> None:
    assert cols.parse_employees(value) == int(value.strip().replace(",", ""))


@pytest.mark.parametrize("code", ["OR", "dc", "PR", "GU", "VI", "AS", "MP", "WY"])
def test_states_dc_and_territories_are_accepted(code: str) -> None:
    assert cols.parse_state(code) == code.upper()


def test_a_duplicate_email_in_the_file_names_both_rows(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, email="PAT1@cascade1.example")])
    [problem] = problems_of(rt, path)
    assert (problem.row, problem.column) == (3, "email") and "row 2" in problem.reason


def test_one_organization_described_two_ways_is_a_problem(rt: Runtime, tmp_path: Path) -> None:
    second = row(1, email="sam@cascade1.example", is_primary="false", city="Redmond")
    [problem] = problems_of(rt, write_csv(tmp_path / "c.csv", [row(1), second]))
    assert (problem.row, problem.column, problem.value) == (3, "city", "Redmond")
    assert "'Bend' here on row 2" in problem.reason


def test_two_primary_contacts_of_one_organization_is_a_problem(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(1, email="sam@cascade1.example")])
    [problem] = problems_of(rt, path)
    assert (problem.row, problem.column) == (3, "is_primary")


def test_an_unknown_account_manager_names_the_command_that_creates_it(
    rt: Runtime, tmp_path: Path
) -> None:
    [problem] = problems_of(rt, write_csv(tmp_path / "c.csv", [row(1, account_manager="dana")]))
    assert problem.column == "account_manager"
    assert "mailer users create dana --role account_manager" in problem.reason


def test_an_account_manager_must_have_that_role(rt: Runtime, tmp_path: Path, make_user) -> None:
    make_user(username="mark", role="marketing")
    [problem] = problems_of(rt, write_csv(tmp_path / "c.csv", [row(1, account_manager="mark")]))
    assert "role marketing" in problem.reason


def test_an_existing_account_manager_is_linked(rt: Runtime, tmp_path: Path, make_user) -> None:
    user = make_user(username="dana", role="account_manager")
    import_as_admin(rt, write_csv(tmp_path / "c.csv", [row(1, account_manager="dana")]))
    with rt.sessions() as s:
        assert s.scalar(select(Organization.account_manager_id)) == user.id


def test_account_manager_columns_create_the_user_once(rt: Runtime, tmp_path: Path) -> None:
    header = [*HEADER, "account_manager_name", "account_manager_email", "account_manager_phone"]
    am = {
        "account_manager": "dana",
        "account_manager_name": "Dana Rivera",
        "account_manager_email": "dana@cpi.example",
        "account_manager_phone": "541-555-0101",
    }
    path = write_csv(tmp_path / "c.csv", [row(1, **am), row(2, **am)], header=header)
    assert import_as_admin(rt, path).users_created == 1
    assert import_as_admin(rt, path).changes == 0
    with rt.sessions() as s:
        assert s.scalars(select(Organization.account_manager_id).distinct()).all() != [None]


def test_one_bad_row_among_many_imports_nothing_and_names_the_row(
    rt: Runtime, tmp_path: Path
) -> None:
    rows = [row(n, is_primary="false") for n in range(1, 2001)]
    rows[1233]["benefit_eligible_employees"] = "lots"
    [problem] = problems_of(rt, write_csv(tmp_path / "c.csv", rows))
    assert (problem.row, problem.column, problem.value) == (1235, "benefit_eligible_employees",
                                                            "lots")  # fmt: skip
    assert count(rt, Organization) == 0 and count(rt, Contact) == 0


def test_every_bad_row_is_listed_in_file_order(rt: Runtime, tmp_path: Path) -> None:
    rows = [row(1, kind="x"), row(2), row(3, state="ZZ", email="nope")]
    problems = problems_of(rt, write_csv(tmp_path / "c.csv", rows))
    assert [(p.row, p.column) for p in problems] == [(2, "kind"), (4, "state"), (4, "email")]


def test_skip_invalid_imports_good_rows_and_writes_rejects(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, kind="x"), row(3)])
    report = import_as_admin(rt, path, skip_invalid=True)
    assert (report.contacts_created, report.rejected) == (2, 1)
    assert (
        report.rejects_path == str(default_rejects_path(path)) == str(tmp_path / "c.rejected.csv")
    )
    with open(report.rejects_path, encoding="utf-8", newline="") as f:
        rejected = list(csv.DictReader(f))
    assert [r["external_id"] for r in rejected] == ["ORG-00002"]
    assert "line 3, kind" in rejected[0]["reason"]


def test_skip_invalid_writes_rejects_where_asked(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1, email="bad")])
    target = tmp_path / "out" / "bad.csv"
    import_as_admin(rt, path, skip_invalid=True, rejects_path=target)
    assert target.exists() and count(rt, Contact) == 0


EMPLOYEE_HEADERS = [
    "ssn", "SSN", "Social Security Number", "social_security_no", "employee_ssn", "SSN-Last4",
    "salary", "Annual Salary", "wage_rate", "Hourly Wage", "compensation", "date_of_birth",
    "DOB", "BirthDate", "birthday", "dependents", "Number of Dependents", "hire_date",
    "Date of Hire", "benefit_elections", "PIN", "dateOfBirth", "employee_id", "tax_id",
    "TaxID",
]  # fmt: skip


@pytest.mark.parametrize("column", EMPLOYEE_HEADERS)
def test_a_column_of_employee_data_refuses_the_whole_file(
    rt: Runtime, tmp_path: Path, column: str
) -> None:
    path = write_csv(tmp_path / "c.csv", [{**row(1), column: "x"}], header=[*HEADER, column])
    with pytest.raises(EmployeeDataError, match="never stores employee information") as info:
        import_as_admin(rt, path)
    assert repr(column) in str(info.value)
    assert count(rt, Organization) == 0


def test_no_known_column_looks_like_employee_data() -> None:
    assert cols.employee_data_columns(cols.KNOWN) == []
    assert cols.employee_data_columns(["shipping_address", "adobe_id", "pinnacle"]) == []


def test_a_cell_that_looks_like_an_ssn_refuses_the_file(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, title="123-45-6789")])
    with pytest.raises(EmployeeDataError, match=r"line 3, column 'title'"):
        import_as_admin(rt, path, skip_invalid=True)
    assert count(rt, Contact) == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("title", "SSN 123-45-6789"),
        ("tags", "ssn:123-45-6789;salary:85000"),
        ("title", "123.45.6789"),
        ("last_name", "123456789"),
        ("first_name", "123/45/6789"),
        ("title", "DOB 1980-02-03; salary $85000"),
        ("tags", "newsletter;date of birth: 02/03/1980"),
        ("title", "Dependents: 3"),
        ("title", "payroll #4471 weekly"),
    ],
)
def test_employee_data_inside_any_cell_refuses_the_file_naming_row_and_column(
    rt: Runtime, tmp_path: Path, column: str, value: str
) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, **{column: value})])
    with pytest.raises(EmployeeDataError, match=rf"line 3, column '{column}'") as info:
        import_as_admin(rt, path, skip_invalid=True)
    assert "never stores employee information" in str(info.value)
    assert count(rt, Contact) == 0 and count(rt, Organization) == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("organization_name", "Payroll Partners of Bend"),
        ("title", "Salary and Benefits Manager"),
        ("postal_code", "97702-1234"),
        ("street", "123 45th Ave"),
    ],
)
def test_words_and_numbers_that_are_not_employee_data_still_import(
    rt: Runtime, tmp_path: Path, column: str, value: str
) -> None:
    import_as_admin(rt, write_csv(tmp_path / "c.csv", [row(1, **{column: value})]))
    assert count(rt, Contact) == 1


def test_unknown_columns_are_an_error_with_a_suggestion(rt: Runtime, tmp_path: Path) -> None:
    header = [*HEADER, "organisation_name", "favorite_color"]
    path = write_csv(tmp_path / "c.csv", [row(1)], header=header)
    with pytest.raises(ContactImportError) as info:
        import_as_admin(rt, path)
    message = str(info.value)
    assert "unknown column 'organisation_name'; did you mean 'organization_name'?" in message
    assert "unknown column 'favorite_color'" in message


def test_missing_required_columns_are_named(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1)], header=["external_id", "organization_name"])
    with pytest.raises(ContactImportError, match=r"missing required column.*kind, email"):
        import_as_admin(rt, path)


def test_a_repeated_column_is_an_error(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("external_id,kind,organization_name,email,Email\n")
    with pytest.raises(ContactImportError, match="'email' appear more than once"):
        import_as_admin(rt, tmp_path / "c.csv")


def test_an_empty_file_is_an_error(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("")
    with pytest.raises(ContactImportError, match="the file is empty"):
        import_as_admin(rt, tmp_path / "c.csv")


def test_a_header_without_rows_imports_nothing(rt: Runtime, tmp_path: Path) -> None:
    report = import_as_admin(rt, write_csv(tmp_path / "c.csv", []))
    assert report.rows == 0 and report.changes == 0


def test_a_file_that_is_not_utf8_names_the_line(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2)])
    path.write_bytes(path.read_bytes().replace(b"\r\nORG-00002", b"\r\nORG-0000\xe9"))
    with pytest.raises(ContactImportError, match=r"line 3: not UTF-8"):
        import_as_admin(rt, path)


def test_a_utf8_bom_is_accepted(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert import_as_admin(rt, path).contacts_created == 1


def test_a_utf16_file_is_refused_with_the_fix(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("external_id,kind,organization_name,email\n".encode("utf-16"))
    with pytest.raises(ContactImportError, match=r"UTF-16.*save it as UTF-8"):
        import_as_admin(rt, path)


def test_a_row_with_the_wrong_number_of_cells_is_a_problem(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("external_id,kind,organization_name,email\nA,client,Acme\n")
    [problem] = problems_of(rt, path)
    assert problem.row == 2 and "has 3 cells, the header has 4" in problem.reason


def test_a_dry_run_reports_counts_and_writes_nothing(rt: Runtime, tmp_path: Path) -> None:
    report = import_as_admin(rt, write_csv(tmp_path / "c.csv", [row(1), row(2)]), dry_run=True)
    assert (report.organizations_created, report.contacts_created) == (2, 2)
    assert count(rt, Organization) == 0 and count(rt, AuditEvent) == 0


def test_each_import_writes_an_audit_event_with_its_counts(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1)])
    import_as_admin(rt, path, actor=DANA)
    import_as_admin(rt, path, actor=DANA)
    with rt.sessions() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "contacts.import")).all()
    assert [e.details["contacts_created"] for e in events] == [1, 0]
    assert events[0].actor == "dana" and events[0].object_id == "c.csv"


CELL_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@hyp_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cells=st.fixed_dictionaries({c: st.one_of(CELL_TEXT, st.just(row(7)[c])) for c in HEADER}))
def test_random_cells_either_import_or_yield_row_problems(
    rt: Runtime, tmp_path: Path, cells: dict[str, str]
) -> None:
    path = write_csv(tmp_path / "h.csv", [cells])
    try:
        import_as_admin(rt, path)
    except EmployeeDataError:
        assert cols.SSN_ANYWHERE.search(path.read_text(encoding="utf-8"))
    except ContactImportError as exc:
        assert exc.problems, str(exc)
        assert all(p.row >= 2 and p.reason for p in exc.problems)


def cli_env(rt: Runtime) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_USER": "cli-tester",
    }


def test_the_import_command_prints_counts_and_json(rt: Runtime, tmp_path: Path, make_user) -> None:
    from mailer.cli import main

    make_user(username="cli-tester", role="admin")
    path = write_csv(tmp_path / "c.csv", [row(1)])
    result = CliRunner().invoke(main, ["import", str(path)], env=cli_env(rt))
    assert result.exit_code == 0, result.output
    assert "contacts:      1 created, 0 updated, 0 unchanged" in result.output
    again = CliRunner().invoke(main, ["import", "--json", str(path)], env=cli_env(rt))
    assert '"contacts_unchanged": 1' in again.output
    with rt.sessions() as s:
        assert s.scalar(select(AuditEvent.actor).where(AuditEvent.action == "contacts.import")) \
            == "cli-tester"  # fmt: skip


def test_the_import_command_lists_bad_rows_and_exits_65(
    rt: Runtime, tmp_path: Path, make_user
) -> None:
    from mailer.cli import main

    make_user(username="cli-tester", role="admin")
    path = write_csv(tmp_path / "c.csv", [row(1, state="ZZ"), row(2, kind="x")])
    result = CliRunner().invoke(main, ["import", str(path)], env=cli_env(rt))
    assert result.exit_code == 65
    assert "row 2, column 'state', value 'ZZ'" in result.output
    assert "row 3, column 'kind', value 'x'" in result.output
    assert "2 of 2 rows are invalid, so nothing was imported" in result.output


def test_the_import_command_skips_invalid_rows_on_request(
    rt: Runtime, tmp_path: Path, make_user
) -> None:
    from mailer.cli import main

    make_user(username="cli-tester", role="admin")
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, kind="x")])
    rejects = tmp_path / "r.csv"
    args = ["import", "--skip-invalid", "--rejects", str(rejects), str(path)]
    result = CliRunner().invoke(main, args, env=cli_env(rt))
    assert result.exit_code == 0, result.output
    assert f"{path}: imported 1 of 2 rows" in result.output
    assert f"rejected: 1 rows, written to {rejects}" in result.output


def test_skip_invalid_counts_imported_and_rejected_rows_apart(rt: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1), row(2, kind="x")])
    report = import_as_admin(rt, path, skip_invalid=True)
    assert (report.rows, report.imported, report.rejected) == (2, 1, 1)
    assert report.as_dict()["imported"] == 1


def test_a_dry_run_with_skip_invalid_writes_no_rejects_file(
    rt: Runtime, tmp_path: Path, make_user
) -> None:
    from mailer.cli import main

    make_user(username="cli-tester", role="admin")
    # Given a file with one bad row
    (tmp_path / "in").mkdir()
    path = write_csv(tmp_path / "in" / "c.csv", [row(1), row(2, kind="x")])
    # When it is imported as a dry run, skipping invalid rows
    args = ["import", "--dry-run", "--skip-invalid", str(path)]
    result = CliRunner().invoke(main, args, env=cli_env(rt))
    # Then the counts are told, and nothing at all is written
    assert result.exit_code == 0, result.output
    assert "would import (dry run, nothing written) 1 of 2 rows" in result.output
    assert "rejected: 1 rows, not written (dry run)" in result.output
    assert [p.name for p in path.parent.iterdir()] == ["c.csv"]
    assert count(rt, Contact) == 0


def test_line_separators_inside_quoted_cells_stay_in_their_cell(
    rt: Runtime, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1, title="HR\u2028Director\x85x\nnext")])
    import_as_admin(rt, path)
    with rt.sessions() as s:
        assert s.scalar(select(Contact.title)) == "HR\u2028Director\x85x\nnext"


PLAIN_LOCAL = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10}){0,2}", fullmatch=True
)
PLAIN_DOMAIN = st.from_regex(r"([A-Za-z0-9][A-Za-z0-9-]{0,8}\.){1,3}[A-Za-z]{2,8}", fullmatch=True)
ANY_ADDRESS = st.one_of(
    st.builds("{}@{}".format, PLAIN_LOCAL, PLAIN_DOMAIN),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.builds("{}@{}".format, st.text(max_size=8), st.sampled_from(["x.test", "a--b.example",
              "xn--bcher-kva.example", "1.2", "localhost", "bücher.example"])),
)  # fmt: skip


@hyp_settings(max_examples=400, deadline=None)
@given(raw=ANY_ADDRESS)
def test_the_fast_address_check_agrees_with_email_validator(raw: str) -> None:
    fast = fast_normalize(raw)
    if fast is None:
        return
    assert normalize(raw) == fast


def test_a_small_file_finds_its_rows_among_many_stored_ones(rt: Runtime, tmp_path: Path) -> None:
    # Given many stored organizations (look-ups by key, not a full read, find the file's rows)
    from mailer.contacts.sample import load_sample_into_db, write_sample_csv

    day = dt.date(2026, 1, 15)
    load_sample_into_db(rt, 200, seed=3, actor=TESTER, today=day)
    write_sample_csv(tmp_path / "all.csv", 200, seed=3, today=day)
    lines = (tmp_path / "all.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "few.csv").write_text("".join(lines[:3]), encoding="utf-8")
    # When two of its rows are imported again, and then with a changed title
    assert import_as_admin(rt, tmp_path / "few.csv").changes == 0
    changed = lines[2].rsplit(",", 3)
    changed[1] = "Chief People Officer"
    (tmp_path / "few.csv").write_text(lines[0] + lines[1] + ",".join(changed), encoding="utf-8")
    report = import_as_admin(rt, tmp_path / "few.csv")
    # Then only that contact is updated
    assert (report.contacts_updated, report.contacts_unchanged, report.contacts_created) == (
        1,
        1,
        0,
    )


def test_a_refused_file_is_recorded_in_the_audit_log_without_cell_values(
    rt: Runtime, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "c.csv", [row(1, title="123-45-6789"), row(2, kind="secret-x")])
    with pytest.raises(EmployeeDataError):
        import_as_admin(rt, path, actor=DANA)
    with pytest.raises(ContactImportError):
        import_as_admin(rt, write_csv(tmp_path / "d.csv", [row(2, kind="secret-x")]), actor=DANA)
    with rt.sessions() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [e.action for e in events] == ["contacts.import_refused"] * 2
    assert events[0].details["is_employee_data"] and events[1].details["bad_rows"] == 1
    assert "123-45-6789" not in str(events[0].details) and "secret-x" not in str(events[1].details)
    assert count(rt, Organization) == 0


def test_a_file_with_only_the_required_columns_imports_and_the_rest_take_defaults(
    rt: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "minimal.csv"
    path.write_text(
        "external_id,kind,organization_name,email\n"
        "M-1,client,Acme Health,pat@acme.example\n"
        "M-2,prospect,Bend Schools,lee@bendschools.example\n"
    )
    report = import_contacts(rt, path, actor=TESTER)
    assert (report.organizations_created, report.contacts_created) == (2, 2)
    with rt.sessions() as s:
        org = s.scalars(select(Organization).where(Organization.external_id == "M-1")).one()
        contact = s.scalars(select(Contact).where(Contact.email == "pat@acme.example")).one()
    assert (org.industry, org.city, org.country) == ("", "", "US")
    assert (contact.first_name, contact.status, contact.is_primary) == ("", "active", False)
