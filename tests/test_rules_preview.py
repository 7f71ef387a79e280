"""Audience previews on both backends: the count is exactly what the planner plans, and the
sample is the first eligible contacts by id however far apart they are."""

from __future__ import annotations

import datetime as dt
import importlib
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import select

from mailer.delivery.planning import RECORDED_SKIPS, plan_send_log
from mailer.enums import Category
from mailer.models import Campaign, Contact, OptOut, Organization, Send, Suppression, User
from mailer.rules import audience_select, parse_rule, preview, preview_audience
from mailer.runtime import Runtime
from tests.delivery_fixtures import as_user

NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()

RULES = [
    "",
    "kind = client",
    'kind = prospect and state in ("OR", "WA")',
    "employees >= 100 and not received promotions within 30 days",
    'agreement = ended or contact.title contains "hr"',
]


@pytest.fixture
def population(
    rt: Runtime,
    people: dict[str, User],
    make_org: Callable[..., Organization],
    make_contact: Callable[..., Contact],
) -> list[Contact]:
    """Contacts every guard has something to say about: kinds, agreements, managers,
    statuses, opt-outs of each scope (one revoked), suppressions and earlier promotions."""
    amy, otto = people["manager"].id, people["other_manager"].id
    orgs = [
        make_org(kind="client", account_manager_id=amy, benefit_eligible_employees=500),
        make_org(kind="client", account_manager_id=otto, state="WA"),
        make_org(kind="client", agreement_ended_on=TODAY - dt.timedelta(days=10)),
        make_org(kind="client", agreement_started_on=TODAY + dt.timedelta(days=5)),
        make_org(kind="prospect", agreement_started_on=None, state="WA"),
        make_org(kind="prospect", agreement_started_on=None, state="CA", account_manager_id=amy),
    ]
    contacts = []
    for i in range(36):
        org = orgs[i % len(orgs)]
        title = "HR Director" if i % 4 == 0 else "Office manager"
        status = "inactive" if i % 11 == 5 else "active"
        contacts.append(make_contact(organization=org, title=title, status=status))
    scopes = ["promotions", "all_marketing", "service", "features", "promotions"]
    with rt.sessions.begin() as s:
        for i, scope in zip(range(1, 36, 7), scopes, strict=False):
            c = contacts[i]
            revoked = NOW if i == 29 else None
            s.add(
                OptOut(
                    contact_id=c.id,
                    address_hash=c.address_hash,
                    category=scope,
                    source="preferences",
                    revoked_at=revoked,
                )
            )
        # an address both suppressed and opted out is counted once, as suppressed
        for c in (contacts[1], contacts[3], contacts[17]):
            s.add(Suppression(address=c.email, address_hash=c.address_hash, reason="hard_bounce"))
        earlier = Campaign(name="earlier", category="promotions", template="x", created_by="ada")
        s.add(earlier)
        s.flush()
        for c in contacts[::5]:
            s.add(
                Send(
                    campaign_id=earlier.id,
                    contact_id=c.id,
                    organization_id=c.organization_id,
                    category="promotions",
                    email=c.email,
                    status="sent",
                    sent_at=NOW - dt.timedelta(days=3),
                )
            )
    return contacts


def planned(rt: Runtime, rule_text: str, category: Category, created_by: str) -> Counter[str]:
    """What the planner writes to the send log for a campaign: a count per status/reason,
    rolled back afterwards."""
    with rt.sessions() as s:
        campaign = Campaign(name="c", category=category.value, template="x", created_by=created_by)
        s.add(campaign)
        s.flush()
        plan_send_log(rt, s, campaign, rule_text, now=NOW)
        rows = s.execute(
            select(Send.status, Send.skip_reason).where(Send.campaign_id == campaign.id)
        ).all()
        s.rollback()
    return Counter(reason or status for status, reason in rows)


@pytest.mark.parametrize("rule_text", RULES)
@pytest.mark.parametrize(
    ("category", "username"),
    [
        (Category.PROMOTIONS, "mark"),
        (Category.FEATURES, "mark"),
        (Category.SERVICE, "ada"),
        (Category.SERVICE, "amy"),
        (Category.POLICY, "ada"),
    ],
)
def test_the_count_is_exactly_what_the_planner_plans(
    rt: Runtime, population: list[Contact], rule_text: str, category: Category, username: str
) -> None:
    # Given contacts every guard applies to, and a user who may send the category
    rule = parse_rule(rule_text) if rule_text else None
    # When they count the audience, and when a campaign of theirs is planned
    with rt.sessions() as s:
        counted = preview_audience(
            s, as_user(rt, username), rule, category, settings=rt.settings, sample_size=0, now=NOW
        )
    plan = planned(rt, rule_text, category, username)
    # Then the count's eligible are the queued sends, and each recorded skip agrees
    assert counted.eligible == plan.pop("queued", 0)
    assert plan == {k: v for k, v in counted.excluded.items() if k in RECORDED_SKIPS}


@pytest.mark.parametrize("rule_text", RULES)
@pytest.mark.parametrize("category", list(Category))
def test_every_reason_is_counted_as_the_contacts_of_the_select_carry_it(
    rt: Runtime,
    people: dict[str, User],
    population: list[Contact],
    rule_text: str,
    category: Category,
) -> None:
    # Given the select the planner runs (for service, as an account manager asks for it)
    rule = parse_rule(rule_text) if rule_text else None
    manager_id = people["manager"].id if category is Category.SERVICE else None
    sel = audience_select(
        rule, category, today=TODAY, now=NOW, account_manager_id=manager_id, policy_grace_days=30
    )
    # When it is counted, and when its rows are read one by one
    with rt.sessions() as s:
        counted = preview(
            s,
            rule,
            category,
            today=TODAY,
            now=NOW,
            account_manager_id=manager_id,
            policy_grace_days=30,
            sample_size=0,
        )
        rows = Counter(row.skip_reason for row in s.execute(sel))
    # Then every reason, guards the planner does not record included, has its contacts' count
    assert counted.eligible == rows.pop(None, 0)
    assert counted.excluded == dict(rows)


@pytest.mark.parametrize(
    ("eligible_at", "size"),
    [
        # one at each end; the first range finds one, a wider one the other
        ([0, 59], 2),
        # clustered at the end: the ranges the estimate starts with find nothing
        (list(range(30, 60)), 3),
        # one early, the rest late: the sample is put together across ranges
        ([10, *range(40, 60)], 3),
        # fewer than asked for: every one of them
        ([7, 31, 58], 10),
        # everyone
        (list(range(60)), 5),
    ],
)
def test_the_sample_is_the_first_eligible_contacts_by_id_across_ranges(
    rt: Runtime,
    make_contact: Callable[..., Contact],
    monkeypatch: pytest.MonkeyPatch,
    eligible_at: list[int],
    size: int,
) -> None:
    # Given 60 contacts of which only some are eligible (the others inactive)
    contacts = [
        make_contact(status="active" if i in eligible_at else "inactive") for i in range(60)
    ]
    # When a preview looks for a sample in ranges as narrow as the estimate makes them
    monkeypatch.setattr(importlib.import_module("mailer.rules.preview"), "SAMPLE_MIN_IDS", 1)
    with rt.sessions() as s:
        shown = preview(s, None, "promotions", today=TODAY, now=NOW, sample_size=size)
    # Then it shows the first eligible ones in id order, none missed, none repeated
    assert shown.eligible == len(eligible_at)
    assert [r.email for r in shown.sample] == [contacts[i].email for i in eligible_at[:size]]


def test_an_account_managers_sample_is_only_their_own_clients(
    rt: Runtime,
    people: dict[str, User],
    population: list[Contact],
) -> None:
    amy = as_user(rt, "amy")
    with rt.sessions() as s:
        shown = preview_audience(
            s, amy, None, Category.SERVICE, settings=rt.settings, sample_size=50, now=NOW
        )
        own = {
            email
            for (email,) in s.execute(
                select(Contact.email)
                .join(Organization, Organization.id == Contact.organization_id)
                .where(Organization.account_manager_id == people["manager"].id)
            )
        }
    assert shown.sample and len(shown.sample) == shown.eligible
    assert {r.email for r in shown.sample} <= own
