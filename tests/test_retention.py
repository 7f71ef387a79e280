"""Retention: what is older than seven years goes; opt-outs and suppressions keep working."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from starlette.testclient import TestClient

from mailer.access import Actor
from mailer.cli import main
from mailer.contacts.importer import import_contacts
from mailer.enums import Category, Role
from mailer.models import (
    AuditEvent,
    Campaign,
    Contact,
    OptOut,
    Organization,
    OrganizationTag,
    Send,
    Suppression,
    utcnow,
)
from mailer.retention import cutoff_for, run_retention
from mailer.rules import audience_select
from mailer.tokens import TokenSigner
from mailer.web import create_app
from tests.conftest import ROOT, TEST_SECRET

TESTER = Actor(user_id=None, username="tester", role=Role.ADMIN, via="cli")
NOW = utcnow()
OLD = NOW - dt.timedelta(days=8 * 366)
RECENT = NOW - dt.timedelta(days=30)


# --- helpers -------------------------------------------------------------------------------


def count(rt, model: Any) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def ids(rt, model: Any) -> set[int]:
    with rt.sessions() as s:
        return set(s.scalars(select(model.id)))


def snapshot(rt) -> dict[str, list[tuple[Any, ...]]]:
    tables = (Organization, OrganizationTag, Contact, Send, OptOut, Suppression, AuditEvent)
    with rt.engine.connect() as conn:
        return {
            m.__tablename__: [
                tuple(r)
                for r in conn.execute(select(m.__table__).order_by(*m.__table__.primary_key))
            ]
            for m in tables
        }


def old_org(make_org, **kw: Any) -> Organization:
    return make_org(last_activity_at=OLD, agreement_started_on=dt.date(2010, 1, 1), **kw)


def old_contact(make_contact, org: Organization, **kw: Any) -> Contact:
    return make_contact(organization=org, last_activity_at=OLD, **kw)


def campaign(rt, name: str = "Spring features") -> int:
    with rt.sessions.begin() as s:
        row = Campaign(
            name=name, category="features", template="features/spring", created_by="tester"
        )
        s.add(row)
        s.flush()
        return row.id


def send(rt, campaign_id: int, contact: Contact, at: dt.datetime) -> int:
    with rt.sessions.begin() as s:
        row = Send(
            campaign_id=campaign_id,
            contact_id=contact.id,
            organization_id=contact.organization_id,
            category="features",
            email=contact.email,
            status="sent",
            created_at=at,
            sent_at=at,
        )
        s.add(row)
        s.flush()
        return row.id


def add_opt_out(rt, contact: Contact, category: str = "promotions", **kw: Any) -> int:
    with rt.sessions.begin() as s:
        row = OptOut(
            contact_id=contact.id,
            address_hash=contact.address_hash,
            category=category,
            source="one_click",
            ip="203.0.113.7",
            opted_out_at=OLD,
            **kw,
        )
        s.add(row)
        s.flush()
        return row.id


def add_suppression(rt, address: str, at: dt.datetime = OLD) -> int:
    with rt.sessions.begin() as s:
        row = Suppression(
            address=address,
            address_hash=rt.hash_address(address),
            reason="hard_bounce",
            created_at=at,
            detail=f"5.1.1 smtp; 550 5.1.1 <{address}>: Recipient address rejected",
        )
        s.add(row)
        s.flush()
        return row.id


def skip_reasons(rt, category: Category) -> dict[str, str | None]:
    sel = audience_select(None, category, today=NOW.date(), now=NOW)
    with rt.sessions() as s:
        return {row.email: row.skip_reason for row in s.execute(sel)}


def reimport(rt, tmp_path: Path, email: str) -> None:
    """Import one prospect with `email` from a CSV of every import column."""
    row = {
        "external_id": "REIMPORT-1",
        "kind": "prospect",
        "organization_name": "Back Again Dental",
        "industry": "dental",
        "benefit_eligible_employees": "40",
        "street": "2 Main St",
        "city": "Bend",
        "state": "OR",
        "postal_code": "97702",
        "country": "US",
        "account_manager": "",
        "agreement_started_on": "",
        "agreement_ended_on": "",
        "tags": "",
        "email": email,
        "first_name": "Pat",
        "last_name": "Lee",
        "title": "Office Manager",
        "is_primary": "true",
        "status": "active",
    }
    path = tmp_path / "reimport.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, list(row))
        writer.writeheader()
        writer.writerow(row)
    import_contacts(rt, path, actor=TESTER)


# --- what goes, what stays -----------------------------------------------------------------


def test_an_organization_idle_for_over_seven_years_goes_with_its_contacts_tags_and_sends(
    rt, make_org, make_contact
):
    # Given an old organization with tags, contacts and sends, and a recent one
    gone = old_org(make_org)
    with rt.sessions.begin() as s:
        s.add_all([OrganizationTag(organization_id=gone.id, tag=t) for t in ("a", "b")])
    gone_contacts = [old_contact(make_contact, gone) for _ in range(2)]
    kept = make_org()
    kept_contact = make_contact(organization=kept)
    launched = campaign(rt)
    for c in gone_contacts:
        send(rt, launched, c, OLD)
    kept_send = send(rt, launched, kept_contact, RECENT)

    report = run_retention(rt, actor=TESTER)

    assert ids(rt, Organization) == {kept.id}
    assert ids(rt, Contact) == {kept_contact.id}
    assert ids(rt, Send) == {kept_send}
    assert count(rt, OrganizationTag) == 0
    assert (report.organizations, report.contacts, report.organization_tags, report.sends) == (
        1,
        2,
        2,
        2,
    )


def test_recent_sends_contacts_or_a_recently_ended_agreement_keep_an_old_organization(
    rt, make_org, make_contact
):
    by_send, by_contact = old_org(make_org), old_org(make_org)
    by_agreement = old_org(make_org, agreement_ended_on=(NOW - dt.timedelta(days=400)).date())
    mailed = old_contact(make_contact, by_send)
    send(rt, campaign(rt), mailed, RECENT)
    make_contact(organization=by_contact)  # last active now

    report = run_retention(rt, actor=TESTER)

    assert ids(rt, Organization) == {by_send.id, by_contact.id, by_agreement.id}
    assert mailed.id in ids(rt, Contact)
    assert report.organizations == 0


def test_an_old_contact_of_a_live_organization_goes_with_its_sends_and_the_campaign_stays(
    rt, make_org, make_contact
):
    live = make_org()
    recent = make_contact(organization=live)
    stale = old_contact(make_contact, live)
    launched = campaign(rt)
    send(rt, launched, stale, OLD)
    old_send_of_live_contact = send(rt, launched, recent, OLD)

    report = run_retention(rt, actor=TESTER)

    assert ids(rt, Organization) == {live.id}
    assert ids(rt, Contact) == {recent.id}
    assert old_send_of_live_contact not in ids(rt, Send)
    assert count(rt, Send) == 0
    # the campaign is the record of what was launched: it stays with no sends
    assert ids(rt, Campaign) == {launched}
    assert (report.contacts, report.sends, report.organizations) == (1, 2, 0)


def test_an_opt_out_survives_as_a_hash_and_a_reimport_of_the_address_stays_opted_out(
    rt, make_org, make_contact, tmp_path
):
    # Given an old contact who opted out of promotions by mail
    gone = old_contact(make_contact, old_org(make_org), email="Pat@Gone.example")
    opt_out_id = add_opt_out(rt, gone, user_agent="mailto from Pat@Gone.example")

    # When retention purges the contact
    report = run_retention(rt, actor=TESTER)

    # Then the opt-out stays, detached, with its hash and no address in clear
    with rt.sessions() as s:
        row = s.get(OptOut, opt_out_id)
    assert row is not None
    assert (row.contact_id, row.address_hash) == (None, gone.address_hash)
    assert "gone.example" not in row.user_agent.lower()
    assert (row.ip, row.category) == ("203.0.113.7", "promotions")
    assert report.opt_outs_detached == 1
    assert count(rt, Contact) == 0

    # And a re-import of the same address (other case) is still opted out
    reimport(rt, tmp_path, "pat@gone.example")
    assert skip_reasons(rt, Category.PROMOTIONS) == {"pat@gone.example": "opted_out"}


def test_a_suppression_loses_its_clear_address_and_still_suppresses_a_reimport(
    rt, make_org, make_contact, tmp_path
):
    gone = old_contact(make_contact, old_org(make_org), email="bounced@gone.example")
    of_contact = add_suppression(rt, "bounced@gone.example", at=RECENT)
    stale_no_contact = add_suppression(rt, "never@imported.example", at=OLD)
    live = make_contact(email="live@kept.example")
    of_live_contact = add_suppression(rt, "live@kept.example", at=OLD)
    recent_no_contact = add_suppression(rt, "manual@block.example", at=RECENT)

    report = run_retention(rt, actor=TESTER)

    with rt.sessions() as s:
        rows = {r.id: r for r in s.scalars(select(Suppression))}
    assert rows[of_contact].address == "" and rows[stale_no_contact].address == ""
    assert rows[of_contact].address_hash == gone.address_hash
    assert (rows[of_contact].detail, rows[of_contact].reason) == ("", "hard_bounce")
    assert "kept.example" in rows[of_live_contact].detail
    assert rows[of_live_contact].address == live.email
    assert rows[recent_no_contact].address == "manual@block.example"
    assert report.suppressions_blanked == 2

    reimport(rt, tmp_path, "bounced@gone.example")
    reasons = skip_reasons(rt, Category.FEATURES)
    assert reasons["bounced@gone.example"] == "suppressed"


def test_a_dry_run_counts_what_a_run_purges_and_changes_nothing(rt, make_org, make_contact):
    gone = old_org(make_org)
    with rt.sessions.begin() as s:
        s.add(OrganizationTag(organization_id=gone.id, tag="x"))
    doomed = old_contact(make_contact, gone)
    live_stale = old_contact(make_contact, make_org())
    launched = campaign(rt)
    send(rt, launched, doomed, OLD)
    send(rt, launched, live_stale, OLD)
    send(rt, launched, make_contact(), OLD)
    add_opt_out(rt, doomed)
    add_suppression(rt, doomed.email, at=RECENT)
    add_suppression(rt, "stale@nowhere.example", at=OLD)
    before = snapshot(rt)

    dry = run_retention(rt, actor=TESTER, dry_run=True)

    assert snapshot(rt) == before
    real = run_retention(rt, actor=TESTER)
    assert dry.counts() == real.counts()
    assert dry.counts() == {
        "organizations": 1,
        "contacts": 2,
        "organization_tags": 1,
        "sends": 3,
        "opt_outs_detached": 1,
        "suppressions_blanked": 2,
    }


def test_purging_in_small_chunks_is_exact_across_chunk_boundaries(rt, make_org, make_contact):
    # Given 7 old organizations of 3 old contacts each (one old send each); every third
    # organization stays through one recent contact; and 3 recent contacts with recent sends
    launched = campaign(rt)
    kept_orgs, kept_contacts = set(), set()
    for n in range(7):
        org = old_org(make_org)
        for _ in range(3):
            send(rt, launched, old_contact(make_contact, org), OLD)
        if n % 3 == 0:
            kept_orgs.add(org.id)
            kept_contacts.add(make_contact(organization=org).id)
    recent = [make_contact() for _ in range(3)]
    recent_sends = {send(rt, launched, c, RECENT) for c in recent}

    # When retention runs two ids at a time
    report = run_retention(rt, actor=TESTER, chunk_size=2)

    # Then exactly the old rows went, none was skipped at a chunk boundary
    assert ids(rt, Organization) == kept_orgs | {c.organization_id for c in recent}
    assert ids(rt, Contact) == kept_contacts | {c.id for c in recent}
    assert ids(rt, Send) == recent_sends
    assert (report.organizations, report.contacts, report.sends) == (4, 21, 21)


def test_a_token_of_a_purged_contact_gets_the_plain_404(rt, make_org, make_contact):
    gone = old_contact(make_contact, old_org(make_org))
    token = TokenSigner(rt.settings).make(gone.id, "promotions", 0)
    run_retention(rt, actor=TESTER)

    with TestClient(create_app(rt.settings), base_url="https://u.cpi.example") as client:
        unknown = client.get("/no/such/page")
        for response in (
            client.get(f"/u/{token}"),
            client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}),
            client.get(f"/preferences/{token}"),
        ):
            assert response.status_code == 404
            assert response.text == unknown.text
    assert count(rt, OptOut) == 0


def test_a_run_writes_one_audit_event_with_counts_and_no_addresses(rt, make_org, make_contact):
    gone = old_contact(make_contact, old_org(make_org), email="secret.person@gone.example")
    add_suppression(rt, gone.email, at=RECENT)

    run_retention(rt, actor=TESTER)
    run_retention(rt, actor=TESTER, dry_run=True)

    with rt.sessions() as s:
        events = list(s.scalars(select(AuditEvent)))
    assert [(e.action, e.actor) for e in events] == [("retention.run", "tester")]
    details = events[0].details
    assert details["organizations"] == 1 and details["contacts"] == 1
    assert details["suppressions_blanked"] == 1
    assert "gone.example" not in json.dumps(details)


def test_the_cutoff_is_seven_calendar_years_and_leap_days_fall_back():
    assert cutoff_for(dt.datetime(2026, 11, 26, tzinfo=dt.UTC), 7) == dt.datetime(
        2019, 11, 26, tzinfo=dt.UTC
    )
    assert cutoff_for(dt.datetime(2028, 2, 29, tzinfo=dt.UTC), 7) == dt.datetime(
        2021, 2, 28, tzinfo=dt.UTC
    )


def test_a_naive_now_is_refused(rt):
    with pytest.raises(ValueError, match="naive"):
        run_retention(rt, now=dt.datetime(2026, 1, 1), actor=TESTER)


def test_the_command_reports_counts_as_json_and_dry_run_purges_nothing(
    rt, database_url, tmp_path, make_org, make_contact, make_user
):
    make_user(username="ada", role="admin")
    old_contact(make_contact, old_org(make_org))
    env = {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_SECRET_KEY": TEST_SECRET,
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_USER": "ada",
    }
    runner = CliRunner()

    dry = runner.invoke(main, ["retention", "run", "--dry-run", "--json"], env=env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["organizations"] == 1
    assert count(rt, Organization) == 1

    done = runner.invoke(main, ["retention", "run"], env=env)
    assert done.exit_code == 0, done.output
    assert "organizations: 1" in done.output
    assert count(rt, Organization) == 0
    with rt.sessions() as s:
        assert s.scalar(select(AuditEvent.actor)) == "ada"
