"""mailer.consent and mailer.policy.text: opt-outs, opt-ins, preferences, policy versions."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from mailer import consent
from mailer.enums import ALL_MARKETING, Category, OptOutSource
from mailer.errors import NotFoundError
from mailer.models import AuditEvent, OptOut, PolicyVersion
from mailer.policy import text as policy_text

WHO = {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (test)", "actor": "recipient"}


def _opt_out(session, contact_id, scope, **kw):
    return consent.opt_out(
        session,
        contact_id=contact_id,
        scope=scope,
        source=kw.pop("source", OptOutSource.ONE_CLICK),
        **{**WHO, **kw},
    )


def _opt_in(session, contact_id, scope):
    return consent.opt_in(
        session, contact_id=contact_id, scope=scope, source=OptOutSource.PREFERENCES, **WHO
    )


def test_opting_out_records_ip_user_agent_send_and_an_audit_event(rt, make_contact):
    contact = make_contact()
    with rt.sessions.begin() as s:
        assert _opt_out(s, contact.id, "promotions", send_id=42) is True
    with rt.sessions() as s:
        row = s.scalars(select(OptOut)).one()
        assert (row.address_hash, row.category, row.source) == (
            contact.address_hash,
            "promotions",
            "one_click",
        )
        assert (row.ip, row.user_agent, row.send_id, row.revoked_at) == (
            "203.0.113.7",
            "Mozilla/5.0 (test)",
            42,
            None,
        )
        event = s.scalars(select(AuditEvent)).one()
        assert (event.action, event.actor, event.ip, event.object_id) == (
            "consent.opt_out",
            "recipient",
            "203.0.113.7",
            str(contact.id),
        )
        assert event.details["scope"] == "promotions"
        assert event.details["send_id"] == 42


def test_opting_out_twice_changes_nothing_the_second_time(rt, make_contact):
    contact = make_contact()
    with rt.sessions.begin() as s:
        assert _opt_out(s, contact.id, "features") is True
    with rt.sessions.begin() as s:
        assert _opt_out(s, contact.id, "features") is False
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OptOut)) == 1
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 1


def test_opting_back_in_revokes_the_opt_out_and_keeps_the_row(rt, make_contact):
    contact = make_contact()
    with rt.sessions.begin() as s:
        _opt_out(s, contact.id, "promotions")
    with rt.sessions.begin() as s:
        assert _opt_in(s, contact.id, "promotions") is True
        assert _opt_in(s, contact.id, "promotions") is False
    with rt.sessions() as s:
        row = s.scalars(select(OptOut)).one()
        assert row.revoked_at is not None
        assert not consent.is_opted_out(
            s, address_hash=contact.address_hash, category=Category.PROMOTIONS
        )
        actions = s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        assert actions == ["consent.opt_out", "consent.opt_in"]


def test_all_marketing_blocks_features_and_promotions_but_not_service_or_policy(rt, make_contact):
    contact = make_contact()
    with rt.sessions.begin() as s:
        _opt_out(s, contact.id, ALL_MARKETING)
    with rt.sessions() as s:
        blocked = {
            c: consent.is_opted_out(s, address_hash=contact.address_hash, category=c)
            for c in Category
        }
    assert blocked == {
        Category.FEATURES: True,
        Category.PROMOTIONS: True,
        Category.SERVICE: False,
        Category.POLICY: False,
    }


def test_an_opt_out_follows_the_address_to_a_reimported_contact(rt, make_contact, make_org):
    # Given an opt-out whose contact was later deleted (contact_id set to NULL)
    first = make_contact(email="pat@client.example")
    with rt.sessions.begin() as s:
        _opt_out(s, first.id, "features")
    with rt.sessions.begin() as s:
        s.delete(s.get(type(first), first.id))
    # When the same address comes back as a new contact
    again = make_contact(email="pat@client.example", organization=make_org())
    # Then it is still opted out
    with rt.sessions() as s:
        assert consent.is_contact_opted_out(s, again.id, Category.FEATURES)


def test_preferences_show_service_only_to_clients(rt, make_contact, make_org):
    client = make_contact()
    prospect = make_contact(organization=make_org(kind="prospect"))
    with rt.sessions.begin() as s:
        _opt_out(s, client.id, "service")
    with rt.sessions() as s:
        assert consent.preferences(s, client.id) == {
            "all_marketing": True,
            "features": True,
            "promotions": True,
            "service": False,
        }
        assert consent.preferences(s, prospect.id) == {
            "all_marketing": True,
            "features": True,
            "promotions": True,
        }


def test_policy_cannot_be_opted_out_of(rt, make_contact):
    contact = make_contact()
    with rt.sessions.begin() as s, pytest.raises(ValueError, match="cannot opt out of 'policy'"):
        _opt_out(s, contact.id, "policy")


def test_an_unknown_contact_is_not_found_and_nothing_is_written(rt):
    with rt.sessions.begin() as s, pytest.raises(NotFoundError):
        _opt_out(s, 999_999, "features")
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OptOut)) == 0


def test_long_user_agents_are_cut_to_the_column_width(rt, make_contact):
    contact = make_contact()
    with rt.sessions.begin() as s:
        _opt_out(s, contact.id, "features", user_agent="x" * 2000)
    with rt.sessions() as s:
        assert len(s.scalars(select(OptOut.user_agent)).one()) == consent.USER_AGENT_MAX_CHARS


def test_the_first_policy_version_is_recorded_once(rt):
    with rt.sessions.begin() as s:
        assert policy_text.ensure_first_version(s) is True
    with rt.sessions.begin() as s:
        assert policy_text.ensure_first_version(s) is False
    with rt.sessions() as s:
        version = policy_text.current_version(s)
        assert version is not None
        assert (version.version, version.published_by, version.effective_on) == (
            "1",
            "system",
            policy_text.FIRST_VERSION_EFFECTIVE_ON,
        )
        assert version.text.startswith("Communication Partners, Inc. Privacy Policy")
        assert policy_text.changes_from_previous(s, version) is None
        assert s.scalars(select(AuditEvent.action)).all() == ["policy.first_version"]


def test_a_later_version_shows_what_changed_line_by_line(rt):
    with rt.sessions.begin() as s:
        policy_text.ensure_first_version(s)
        first = policy_text.get_version(s, "1")
        new_text = first.text.replace("seven (7) years", "five (5) years")
        s.add(
            PolicyVersion(
                version="2",
                effective_on=first.effective_on + dt.timedelta(days=30),
                text=new_text,
                published_by="compliance",
            )
        )
    with rt.sessions() as s:
        second = policy_text.get_version(s, "2")
        assert policy_text.current_version(s, today=second.effective_on) == second
        assert (
            policy_text.current_version(s, today=second.effective_on - dt.timedelta(1)).version
            == "1"
        )
        changes = [c for c in policy_text.changes_from_previous(s, second) if c.kind != "same"]
        assert [c.kind for c in changes] == ["removed", "added"]
        assert "seven (7) years" in changes[0].text
        assert "five (5) years" in changes[1].text
