"""Admin and compliance queries: the audit log, contact search and records, consent and
suppression changes with a reason; each scoped to what the acting user may see."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from mailer.access import Actor
from mailer.audit import AuditQuery, AuditQueryError, query_events, record
from mailer.contacts.compliance import (
    REASON_MAX_CHARS,
    REASON_MIN_CHARS,
    ComplianceError,
    admin_opt_in,
    admin_opt_out,
    suppress_address,
    unsuppress_address,
)
from mailer.contacts.lookup import contact_record, search_contacts
from mailer.enums import Role
from mailer.errors import NotFoundError, PermissionDeniedError
from mailer.models import AuditEvent, Campaign, Send, Suppression, User, utcnow
from mailer.runtime import Runtime


def as_actor(user: User) -> Actor:
    return Actor(user.id, user.username, Role(user.role), "web", "192.0.2.4")


def test_the_audit_log_filters_and_pages_without_repeats(rt: Runtime, make_user) -> None:
    ada = as_actor(make_user(username="ada", role="admin"))
    base = utcnow() - dt.timedelta(hours=1)
    with rt.sessions.begin() as s:
        for i in range(7):
            event = record(s, "mel" if i % 2 else "ada", f"campaign.{'launch' if i < 5 else 'x'}")
            event.at = base + dt.timedelta(minutes=i)
            event.object_type, event.object_id = "campaign", str(i)
    with rt.sessions() as s:
        launches = AuditQuery(action="campaign.*")
        first = query_events(s, ada, launches, limit=3)
        second = query_events(s, ada, launches, limit=3, cursor=first.next_cursor)
        third = query_events(s, ada, launches, limit=3, cursor=second.next_cursor)
        ids = [e.object_id for page in (first, second, third) for e in page.items]
        assert ids == ["6", "5", "4", "3", "2", "1", "0"] and third.next_cursor is None
        mel = query_events(s, ada, AuditQuery(actor="mel", action="campaign.launch"))
        assert [e.object_id for e in mel.items] == ["3", "1"]
        window = AuditQuery(
            since=base + dt.timedelta(minutes=2), until=base + dt.timedelta(minutes=4)
        )
        assert [e.object_id for e in query_events(s, ada, window).items] == ["3", "2"]
        one = query_events(s, ada, AuditQuery(object_type="campaign", object_id="4"))
        assert [e.object_id for e in one.items] == ["4"]
        with pytest.raises(AuditQueryError, match="not one this service handed out"):
            query_events(s, ada, cursor="garbage!")
        with pytest.raises(AuditQueryError, match="choose 1 to 500"):
            query_events(s, ada, limit=0)


def test_only_admins_read_the_audit_log(rt: Runtime, make_user) -> None:
    mel = as_actor(make_user(username="mel", role="marketing"))
    with rt.sessions() as s, pytest.raises(PermissionDeniedError, match="only an admin"):
        query_events(s, mel)
    with rt.sessions() as s:
        [denied] = s.scalars(select(AuditEvent).where(AuditEvent.action == "denied"))
    assert denied.details["action"] == "audit.read"


def test_contact_search_is_scoped_to_an_account_managers_clients(
    rt: Runtime, make_user, make_org, make_contact
) -> None:
    dana = make_user(username="dana", role="account_manager")
    lee = make_user(username="lee", role="account_manager")
    mel = as_actor(make_user(username="mel", role="marketing"))
    mine = [
        make_contact(organization=make_org(account_manager_id=dana.id, name="Deschutes 100%"))
        for _ in range(3)
    ]
    theirs = make_contact(organization=make_org(account_manager_id=lee.id, name="Deschutes B"))
    with rt.sessions() as s:
        page = search_contacts(s, as_actor(dana), "deschutes", limit=2)
        rest = search_contacts(s, as_actor(dana), "deschutes", limit=2, after_id=page.next_after_id)
        assert [c.id for c in page.items + rest.items] == [c.id for c in mine]
        assert rest.next_after_id is None
        everyone = search_contacts(s, mel, "DESCHUTES")
        assert {c.id for c in everyone.items} == {*(c.id for c in mine), theirs.id}
        # LIKE wildcards in the text are literal
        assert [c.id for c in search_contacts(s, mel, "100%").items] == [c.id for c in mine]
        assert search_contacts(s, mel, "1_0").items == []


def test_a_contact_record_shows_consent_suppression_and_sends(
    rt: Runtime, make_user, make_org, make_contact
) -> None:
    ada = as_actor(make_user(username="ada", role="admin"))
    dana = make_user(username="dana", role="account_manager")
    lee = as_actor(make_user(username="lee", role="account_manager"))
    contact = make_contact(organization=make_org(account_manager_id=dana.id))
    with rt.sessions.begin() as s:
        campaign = Campaign(name="Spring", category="promotions", template="t", created_by="ada")
        s.add(campaign)
        s.flush()
        s.add(
            Send(
                campaign_id=campaign.id,
                contact_id=contact.id,
                category="promotions",
                email=contact.email,
                status="failed",
                smtp_code=550,
                smtp_reply="5.1.1 gone",
            )
        )
        admin_opt_out(s, ada, contact.id, "promotions", "asked by phone, ticket 12")
        suppress_address(s, ada, contact.email, "hard bounce reported by client",
                         address_hash=rt.hash_address(contact.email))  # fmt: skip
    with rt.sessions() as s:
        seen = contact_record(s, as_actor(dana), contact.id)
        assert seen.consent["promotions"] is False and seen.consent["features"] is True
        assert seen.suppression is not None and seen.suppression.reason == "manual"
        assert [o.scope for o in seen.opt_outs] == ["promotions"]
        [send] = seen.sends
        assert (send.campaign_name, send.smtp_reply) == ("Spring", "5.1.1 gone")
        with pytest.raises(PermissionDeniedError, match="client you do not manage"):
            contact_record(s, lee, contact.id)
        with pytest.raises(NotFoundError):
            contact_record(s, ada, 999_999)


def test_consent_and_suppression_changes_are_admin_only_with_a_reason(
    rt: Runtime, make_user, make_org, make_contact
) -> None:
    ada = as_actor(make_user(username="ada", role="admin"))
    mel = as_actor(make_user(username="mel", role="marketing"))
    contact = make_contact()
    address_hash = rt.hash_address(contact.email)
    with rt.sessions.begin() as s, pytest.raises(ComplianceError, match="the reason is empty"):
        admin_opt_out(s, ada, contact.id, "promotions", "  ")
    with pytest.raises(PermissionDeniedError), rt.sessions.begin() as s:
        admin_opt_out(s, mel, contact.id, "promotions", "because")
    with pytest.raises(PermissionDeniedError), rt.sessions.begin() as s:
        suppress_address(s, mel, contact.email, "because", address_hash=address_hash)
    with rt.sessions.begin() as s:
        assert admin_opt_out(s, ada, contact.id, "promotions", "asked by phone")
        assert not admin_opt_out(s, ada, contact.id, "promotions", "asked twice")
        assert admin_opt_in(s, ada, contact.id, "promotions", "written request to resume")
        assert suppress_address(s, ada, contact.email, "legal hold", address_hash=address_hash)
        assert not suppress_address(s, ada, contact.email, "again", address_hash=address_hash)
    with rt.sessions.begin() as s:
        unsuppress_address(s, ada, contact.email, "hold lifted", address_hash=address_hash)
        assert s.scalar(select(Suppression)) is None
        with pytest.raises(NotFoundError, match="is not suppressed"):
            unsuppress_address(s, ada, contact.email, "again", address_hash=address_hash)
    with rt.sessions() as s:
        events = {e.action: e for e in s.scalars(select(AuditEvent))}
    assert events["consent.opt_out"].details["reason"] == "asked by phone"
    assert events["consent.opt_in"].details["reason"] == "written request to resume"
    assert events["suppression.remove"].details["was_reason"] == "manual"
    assert events["suppression.add"].ip == "192.0.2.4"
    assert len([e for e in events.values() if e.action == "denied"]) == 1


def test_a_reason_too_short_or_too_long_is_refused_with_the_rule_and_nothing_changes(
    rt: Runtime, make_user, make_contact
) -> None:
    ada = as_actor(make_user(username="ada", role="admin"))
    contact = make_contact()
    short = "x" * (REASON_MIN_CHARS - 1)
    with rt.sessions.begin() as s, pytest.raises(ComplianceError) as exc:
        admin_opt_out(s, ada, contact.id, "promotions", f"  {short}  ")
    assert f"the reason has only {len(short)} character(s)" in str(exc.value)
    assert f"write at least {REASON_MIN_CHARS} characters" in str(exc.value)
    with rt.sessions.begin() as s, pytest.raises(ComplianceError, match="keep it to 500"):
        admin_opt_out(s, ada, contact.id, "promotions", "y" * (REASON_MAX_CHARS + 1))
    with rt.sessions.begin() as s:
        # exactly the limits are fine, and what is kept is the whole reason, trimmed
        assert admin_opt_out(s, ada, contact.id, "promotions", " " + "z" * REASON_MIN_CHARS)
        assert admin_opt_out(s, ada, contact.id, "features", "w" * REASON_MAX_CHARS)
    with rt.sessions() as s:
        reasons = sorted(
            e.details["reason"]
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "consent.opt_out"))
        )
    assert reasons == ["w" * REASON_MAX_CHARS, "z" * REASON_MIN_CHARS]


def cli(rt: Runtime, user: str, *args: str):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from mailer.cli import main

    env = {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_USER": user,
    }
    return CliRunner().invoke(main, list(args), env=env)


def test_the_contact_and_audit_commands(rt: Runtime, make_user, make_org, make_contact) -> None:
    import json

    make_user(username="ada", role="admin")
    dana = make_user(username="dana", role="account_manager")
    make_user(username="mel", role="marketing")
    mine = make_contact(organization=make_org(account_manager_id=dana.id, name="Bend Dental"))
    other = make_contact(organization=make_org(name="Bend Schools"))
    found = json.loads(cli(rt, "dana", "contact", "search", "bend", "--json").output)
    assert [c["id"] for c in found["items"]] == [mine.id]
    assert cli(rt, "dana", "contact", "show", other.email).exit_code == 4
    shown = cli(rt, "mel", "contact", "show", str(mine.id))
    assert shown.exit_code == 0 and "Bend Dental" in shown.output
    args = ["contact", "opt-out", mine.email, "--scope", "promotions", "--reason", "by phone"]
    assert cli(rt, "mel", *args).exit_code == 4
    result = cli(rt, "ada", *args)
    assert result.exit_code == 0 and "opted out of promotions" in result.output
    result = cli(rt, "ada", "contact", "suppress", other.email, "--reason", "legal hold")
    assert result.exit_code == 0, result.output
    result = cli(rt, "ada", "contact", "unsuppress", other.email, "--reason", "hold lifted")
    assert result.exit_code == 0, result.output
    result = cli(rt, "ada", "contact", "suppress", "not an address", "--reason", "legal hold")
    assert result.exit_code == 1 and "not a valid email address" in result.output
    log = json.loads(cli(rt, "ada", "audit", "--action", "denied", "--json").output)
    assert [e["actor"] for e in log["items"]] == ["mel", "dana"]
    page = json.loads(cli(rt, "ada", "audit", "--limit", "1", "--json").output)
    assert page["next_cursor"]
    assert cli(rt, "mel", "audit").exit_code == 4
    bad = cli(rt, "ada", "audit", "--since", "yesterday")
    assert bad.exit_code == 2 and "use YYYY-MM-DD" in bad.output
