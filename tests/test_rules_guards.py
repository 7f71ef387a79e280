"""Category guards on both backends: ANDed onto every rule, never undone by one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mailer.enums import Category
from mailer.models import OptOut, Suppression
from mailer.rules import audience_select, count_by_reason, parse_rule, preview

TODAY = dt.date(2026, 6, 15)
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


def selected(rt, rule_text: str | None, category: str, **kw: Any) -> dict[int, Any]:
    """contact id -> skip reason, for every contact the rule matches."""
    rule = parse_rule(rule_text) if rule_text is not None else None
    sel = audience_select(rule, Category(category), today=TODAY, now=NOW, **kw)
    with rt.sessions() as s:
        return {row.contact_id: row.skip_reason for row in s.execute(sel)}


def opt_out(rt, contact, category: str, *, revoked: bool = False) -> None:
    with rt.sessions.begin() as s:
        s.add(
            OptOut(
                contact_id=contact.id,
                address_hash=contact.address_hash,
                category=category,
                source="preferences",
                revoked_at=NOW if revoked else None,
            )
        )


def suppress(rt, contact) -> None:
    with rt.sessions.begin() as s:
        s.add(
            Suppression(
                address=contact.email, address_hash=contact.address_hash, reason="hard_bounce"
            )
        )


def test_service_never_reaches_prospects_whatever_the_rule_says(rt, make_org, make_contact) -> None:
    client = make_contact(organization=make_org(kind="client"))
    prospect = make_contact(organization=make_org(kind="prospect", agreement_started_on=None))
    got = selected(rt, "kind = prospect or kind = client", "service")
    assert got == {client.id: None, prospect.id: "not_a_client"}


def test_service_needs_an_active_agreement(rt, make_org, make_contact) -> None:
    ended = make_contact(organization=make_org(agreement_ended_on=TODAY))
    future = make_contact(organization=make_org(agreement_started_on=TODAY + dt.timedelta(days=1)))
    starts_today = make_contact(organization=make_org(agreement_started_on=TODAY))
    ends_tomorrow = make_contact(organization=make_org(agreement_ended_on=TODAY + dt.timedelta(1)))
    got = selected(rt, None, "service")
    assert got == {
        ended.id: "no_active_agreement",
        future.id: "no_active_agreement",
        starts_today.id: None,
        ends_tomorrow.id: None,
    }


def test_an_account_manager_reaches_only_their_own_clients(
    rt, make_org, make_contact, make_user
) -> None:
    dana, lee = make_user(role="account_manager"), make_user(role="account_manager")
    own = make_contact(organization=make_org(account_manager_id=dana.id))
    other = make_contact(organization=make_org(account_manager_id=lee.id))
    nobody = make_contact(organization=make_org())
    got = selected(rt, "everyone", "service", account_manager_id=dana.id)
    assert got == {own.id: None, other.id: "not_own_client", nobody.id: "not_own_client"}
    # the limit is for service mail: marketing and everyone-without-a-manager see them all
    assert set(selected(rt, "everyone", "service").values()) == {None}


def test_all_marketing_opt_out_blocks_promotions_and_features_but_not_service(
    rt, make_contact
) -> None:
    contact = make_contact()
    opt_out(rt, contact, "all_marketing")
    assert selected(rt, None, "promotions") == {contact.id: "opted_out"}
    assert selected(rt, None, "features") == {contact.id: "opted_out"}
    assert selected(rt, None, "service") == {contact.id: None}
    assert selected(rt, None, "policy") == {contact.id: None}


def test_a_category_opt_out_covers_that_category_only(rt, make_contact) -> None:
    contact = make_contact()
    opt_out(rt, contact, "promotions")
    opt_out(rt, contact, "promotions")  # twice: still one row per contact
    assert selected(rt, None, "promotions") == {contact.id: "opted_out"}
    assert selected(rt, None, "features") == {contact.id: None}
    opt_out(rt, contact, "service")
    assert selected(rt, None, "service") == {contact.id: "opted_out"}


def test_a_revoked_opt_out_no_longer_excludes(rt, make_contact) -> None:
    contact = make_contact()
    opt_out(rt, contact, "all_marketing", revoked=True)
    assert selected(rt, None, "promotions") == {contact.id: None}


def test_policy_ignores_opt_outs_but_records_suppressed_contacts(rt, make_contact) -> None:
    opted, bounced = make_contact(), make_contact()
    for category in ("all_marketing", "promotions", "features", "service"):
        opt_out(rt, opted, category)
    suppress(rt, bounced)
    assert selected(rt, None, "policy") == {opted.id: None, bounced.id: "suppressed"}


def test_suppressed_contacts_are_skipped_in_every_category(rt, make_contact) -> None:
    contact = make_contact()
    suppress(rt, contact)
    for category in Category:
        assert selected(rt, None, category) == {contact.id: "suppressed"}, category


def test_inactive_contacts_are_skipped_in_every_category(rt, make_contact) -> None:
    contact = make_contact(status="inactive")
    for category in Category:
        assert selected(rt, None, category) == {contact.id: "inactive"}, category


def test_policy_reaches_every_client_whose_information_is_held_active_or_former(
    rt, make_org, make_contact
) -> None:
    day = dt.timedelta(days=1)
    recent = make_contact(organization=make_org(agreement_ended_on=TODAY - 89 * day))
    long_ago = make_contact(organization=make_org(agreement_ended_on=TODAY - 6 * 365 * day))
    never_started = make_contact(organization=make_org(agreement_started_on=None))
    current = make_contact(organization=make_org())
    prospect = make_contact(organization=make_org(kind="prospect", agreement_started_on=None))
    assert selected(rt, None, "policy") == {
        recent.id: None,
        long_ago.id: None,
        never_started.id: None,
        current.id: None,
        prospect.id: "not_a_client",
    }


def test_a_policy_grace_period_narrows_the_reach_to_recently_ended_agreements(
    rt, make_org, make_contact
) -> None:
    day = dt.timedelta(days=1)
    within = make_contact(organization=make_org(agreement_ended_on=TODAY - 89 * day))
    expired = make_contact(organization=make_org(agreement_ended_on=TODAY - 90 * day))
    current = make_contact(organization=make_org())
    prospect = make_contact(organization=make_org(kind="prospect", agreement_started_on=None))
    got = selected(rt, None, "policy", policy_grace_days=90)
    assert got == {
        within.id: None,
        expired.id: "not_eligible",
        current.id: None,
        prospect.id: "not_a_client",
    }
    assert selected(rt, None, "policy", policy_grace_days=30)[within.id] == "not_eligible"


def test_marketing_reaches_clients_and_prospects(rt, make_org, make_contact) -> None:
    client = make_contact(organization=make_org(kind="client"))
    prospect = make_contact(organization=make_org(kind="prospect", agreement_started_on=None))
    assert selected(rt, "everyone", "features") == {client.id: None, prospect.id: None}


def test_the_first_guard_that_excludes_names_the_reason(rt, make_org, make_contact) -> None:
    prospect = make_contact(
        organization=make_org(kind="prospect", agreement_started_on=None), status="inactive"
    )
    suppress(rt, prospect)
    opt_out(rt, prospect, "service")
    assert selected(rt, None, "service") == {prospect.id: "not_a_client"}
    assert selected(rt, None, "promotions") == {prospect.id: "inactive"}


def test_no_rule_can_undo_a_guard(rt, make_contact) -> None:
    contact = make_contact()
    opt_out(rt, contact, "all_marketing")
    for rule in ("everyone", "not (kind = client and kind = prospect)", "not not everyone"):
        assert selected(rt, rule, "promotions") == {contact.id: "opted_out"}


def test_count_by_reason_and_preview_agree(rt, make_org, make_contact) -> None:
    eligible = [make_contact() for _ in range(3)]
    opt_out(rt, make_contact(), "promotions")
    suppress(rt, make_contact())
    make_contact(status="inactive")
    sel = audience_select(None, Category.PROMOTIONS, today=TODAY, now=NOW)
    with rt.sessions() as s:
        counts = count_by_reason(s, sel)
        shown = preview(s, None, "promotions", today=TODAY, now=NOW, sample_size=2)
    assert counts == {None: 3, "opted_out": 1, "suppressed": 1, "inactive": 1}
    assert (shown.eligible, shown.matched) == (3, 6)
    assert shown.excluded == {"opted_out": 1, "suppressed": 1, "inactive": 1}
    assert [r.email for r in shown.sample] == [c.email for c in eligible[:2]]
    assert shown.sample[0].organization.startswith("Example Org")
