"""Sample data: deterministic, realistic, importable, and fast to load."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from mailer.access import SYSTEM
from mailer.contacts.importer import import_contacts
from mailer.contacts.sample import (
    SAMPLE_COLUMNS,
    generate_organizations,
    generate_sample,
    load_sample_into_db,
    write_sample_csv,
)
from mailer.errors import MailerError
from mailer.models import AuditEvent, Contact, Organization, OrganizationTag, User
from mailer.runtime import Runtime

TODAY = dt.date(2026, 11, 26)


def test_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    write_sample_csv(tmp_path / "a.csv", 300, seed=7, today=TODAY)
    write_sample_csv(tmp_path / "b.csv", 300, seed=7, today=TODAY)
    write_sample_csv(tmp_path / "c.csv", 300, seed=8, today=TODAY)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_an_organization_is_the_same_whatever_the_total() -> None:
    small = list(generate_organizations(10, seed=3, today=TODAY))
    large = list(generate_organizations(50, seed=3, today=TODAY))
    assert small == large[:10]


def test_sizes_and_distributions_are_realistic() -> None:
    orgs = list(generate_organizations(3000, seed=1, today=TODAY))
    employees = [o.benefit_eligible_employees for o in orgs]
    assert min(employees) >= 5 and max(employees) <= 20_000
    assert 30 <= statistics.median(employees) <= 150  # most employers are small …
    assert sum(e >= 1000 for e in employees) >= 30  # … and a few are large
    assert len({o.industry for o in orgs}) >= 8
    assert len({o.state for o in orgs}) >= 10
    kinds = Counter(o.kind for o in orgs)
    assert 0.6 < kinds["client"] / len(orgs) < 0.8
    assert all(o.agreement_started_on is None for o in orgs if o.kind == "prospect")
    clients = [o for o in orgs if o.kind == "client"]
    active = [o for o in clients if o.agreement_ended_on is None]
    recent = [
        o for o in clients if o.agreement_ended_on and (TODAY - o.agreement_ended_on).days < 90
    ]
    assert len(active) > 0.7 * len(clients) and len(recent) > 0.05 * len(clients)
    assert all(
        o.agreement_ended_on > o.agreement_started_on
        for o in clients
        if o.agreement_ended_on and o.agreement_started_on
    )
    assert len({o.account_manager for o in clients}) >= 4


def test_contacts_are_one_to_five_with_one_primary_at_reserved_domains() -> None:
    orgs = list(generate_organizations(1000, seed=2, today=TODAY))
    assert {len(o.contacts) for o in orgs} == {1, 2, 3, 4, 5}
    assert all(sum(c.is_primary for c in o.contacts) == 1 for o in orgs)
    contacts = [c for o in orgs for c in o.contacts]
    assert all(c.email.endswith(".example") for c in contacts)
    assert len({c.email for c in contacts}) == len(contacts)
    assert any(not (c.first_name + c.last_name).isascii() for c in contacts)
    assert {"HR Director", "Benefits Manager", "CFO"} <= {c.title for c in contacts}


def test_contacts_per_org_can_be_fixed() -> None:
    rows = list(generate_sample(20, seed=1, contacts_per_org=(2, 2), today=TODAY))
    assert len(rows) == 40 and set(rows[0]) == set(SAMPLE_COLUMNS)


def test_a_sample_csv_imports_cleanly_and_twice_changes_nothing(
    rt: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "s.csv"
    counts = write_sample_csv(path, 200, seed=5, today=TODAY)
    report = import_contacts(rt, path, actor=SYSTEM)
    assert report.contacts_created == counts["contacts"]
    assert report.organizations_created == 200 and report.users_created >= 4
    assert import_contacts(rt, path, actor=SYSTEM).changes == 0


def test_loading_into_the_database_matches_the_csv(rt: Runtime, tmp_path: Path) -> None:
    counts = load_sample_into_db(rt, 300, seed=9, actor=SYSTEM, today=TODAY)
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Organization)) == 300
        assert s.scalar(select(func.count()).select_from(Contact)) == counts["contacts"]
        assert s.scalar(select(func.count()).select_from(OrganizationTag)) == counts["tags"]
        assert s.scalar(select(func.count()).select_from(User)) == counts["users_created"] >= 4
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "sample_data.load")).one()
        assert event.details["contacts"] == counts["contacts"]
        contact = s.scalars(select(Contact).order_by(Contact.id)).first()
        assert contact is not None and contact.address_hash == rt.hash_address(contact.email)
    # the same rows as a CSV of the same seed: importing it changes nothing
    path = tmp_path / "s.csv"
    write_sample_csv(path, 300, seed=9, today=TODAY)
    assert import_contacts(rt, path, actor=SYSTEM).changes == 0


def test_loading_the_same_seed_twice_is_refused(rt: Runtime) -> None:
    load_sample_into_db(rt, 5, seed=4, actor=SYSTEM, today=TODAY)
    with pytest.raises(MailerError, match=r"already in the database.*another --seed"):
        load_sample_into_db(rt, 5, seed=4, actor=SYSTEM, today=TODAY)
    load_sample_into_db(rt, 5, seed=5, actor=SYSTEM, today=TODAY)


def test_the_sample_data_command_writes_csv_and_loads_the_database(
    rt: Runtime, tmp_path: Path, make_user
) -> None:
    from mailer.cli import main

    make_user(username="ada", role="admin")
    env = {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_USER": "ada",
    }
    path = tmp_path / "s.csv"
    args = ["sample-data", "--organizations", "10", "--seed", "1", "--as-of", "2026-11-26"]
    result = CliRunner().invoke(main, [*args, "--csv", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert path.read_text(encoding="utf-8").startswith("external_id,kind,")
    result = CliRunner().invoke(main, [*args, "--into-db"], env=env)
    assert result.exit_code == 0 and "loaded 10 organizations" in result.output
    bad = CliRunner().invoke(main, args, env=env)
    assert bad.exit_code == 2 and "exactly one of --csv FILE or --into-db" in bad.output


def test_the_busiest_account_manager_and_some_opt_outs_for_the_demo(
    rt, make_user, make_org, make_contact
) -> None:
    from mailer.contacts.sample import busiest_account_manager, opt_out_some
    from mailer.models import OptOut

    assert busiest_account_manager(rt) is None
    amy = make_user(username="amy", role="account_manager")
    bob = make_user(username="bob", role="account_manager")
    make_org(account_manager_id=bob.id)
    for _ in range(2):
        make_contact(organization=make_org(account_manager_id=amy.id))
    make_org(account_manager_id=bob.id, kind="prospect")
    make_org(account_manager_id=bob.id, kind="prospect")
    assert busiest_account_manager(rt) == "amy"
    assert opt_out_some(rt, "tester", every=1) == 2
    with rt.sessions() as s:
        assert s.query(OptOut).count() == 2
