"""Rules compiled to SQL on both backends: every field and operator, checked against Python."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import case, func, insert, inspect, literal, select

from mailer.contacts.states import US_STATES
from mailer.enums import Category
from mailer.errors import RuleError
from mailer.models import (
    Campaign,
    Contact,
    Organization,
    OrganizationTag,
    Send,
)
from mailer.rules import audience_select, parse_rule
from mailer.rules.fields import FIELDS
from mailer.rules.preview import count_by_reason

TODAY = dt.date(2026, 6, 15)
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)


@dataclass
class Row:
    """One contact with its organization, as the Python oracle sees it."""

    id: int
    kind: str
    industry: str
    employees: int | None
    city: str
    state: str
    postal_code: str
    country: str
    tags: list[str]
    manager: str | None
    started: dt.date | None
    ended: dt.date | None
    title: str
    primary: bool
    received: list[tuple[str, int]]  #: (category, days ago) of mail sent

    def got(self, category: str, days: int) -> bool:
        return any(d <= days and category in (c, "any") for c, d in self.received)


ORGS: dict[str, dict[str, Any]] = {
    "A": dict(
        kind="client",
        industry="Healthcare",
        benefit_eligible_employees=120,
        city="Bend",
        state="OR",
        postal_code="97702",
        agreement_started_on=dt.date(2020, 1, 1),
    ),
    "B": dict(
        kind="prospect",
        industry="education",
        benefit_eligible_employees=50,
        city="Seattle",
        state="WA",
        postal_code="98101",
        agreement_started_on=None,
    ),
    "C": dict(
        kind="prospect",
        industry="healthcare",
        benefit_eligible_employees=500,
        city="Portland",
        state="OR",
        postal_code="97201",
        agreement_started_on=None,
    ),
    "D": dict(
        kind="prospect",
        industry="retail",
        benefit_eligible_employees=None,
        city="Boise",
        state="ID",
        postal_code="83702",
        agreement_started_on=None,
    ),
    "E": dict(
        kind="client",
        industry="manufacturing",
        benefit_eligible_employees=1000,
        city="Eugene",
        state="OR",
        postal_code="97401",
        agreement_started_on=dt.date(2026, 5, 1),
    ),
    "F": dict(
        kind="client",
        industry="education",
        benefit_eligible_employees=30,
        city="Spokane",
        state="WA",
        postal_code="99201",
        agreement_started_on=dt.date(2018, 1, 1),
        agreement_ended_on=dt.date(2026, 4, 1),
    ),
    "G": dict(
        kind="client",
        industry="healthcare",
        benefit_eligible_employees=700,
        city="Salem",
        state="OR",
        postal_code="97301",
        agreement_started_on=dt.date(2015, 1, 1),
        agreement_ended_on=dt.date(2025, 1, 1),
    ),
    "H": dict(
        kind="prospect",
        industry="",
        benefit_eligible_employees=10,
        city="Zürich",
        state="",
        postal_code="8001",
        country="CH",
        agreement_started_on=None,
    ),
    "I": dict(
        kind="client",
        industry="tech_50%",
        benefit_eligible_employees=75,
        city="Bend",
        state="OR",
        postal_code="97703",
        agreement_started_on=dt.date(2027, 1, 1),
    ),
}
TAGS = {"A": ["vip", "west"], "B": ["west"], "D": ["Retail-East"], "F": ["former"]}
MANAGERS = {"A": "alice", "E": "bob", "F": "alice", "G": "bob", "I": "alice"}
#: org, title, primary, status, [(category, days ago, status)]
CONTACTS = [
    ("A", "HR Director", True, "active", [("promotions", 40, "sent")]),
    ("A", "Benefits Manager", False, "active", []),
    ("B", "Principal", True, "active", [("features", 5, "sent")]),
    ("C", "HR Manager", True, "active", [("promotions", 10, "sent")]),
    ("C", "CFO", False, "inactive", []),
    ("D", "Owner", True, "active", [("promotions", 3, "failed")]),
    ("E", "Human Resources Lead", True, "active", [("service", 1, "sent")]),
    ("F", "HR", True, "active", []),
    ("G", "Office Manager", True, "active", []),
    ("H", "Directeur RH", True, "active", []),
    ("I", "CTO", True, "active", []),
]


@pytest.fixture
def world(rt, make_org, make_user, make_contact) -> list[Row]:
    users = {name: make_user(username=name, role="account_manager") for name in ("alice", "bob")}
    orgs = {}
    for key, values in ORGS.items():
        manager = MANAGERS.get(key)
        org = make_org(
            account_manager_id=users[manager].id if manager else None, **{"country": "US", **values}
        )
        orgs[key] = org
    with rt.sessions.begin() as s:
        for key, tags in TAGS.items():
            s.add_all(OrganizationTag(organization_id=orgs[key].id, tag=t) for t in tags)
    rows = []
    for key, title, primary, status, sent in CONTACTS:
        contact = make_contact(
            organization=orgs[key], title=title, is_primary=primary, status=status
        )
        with rt.sessions.begin() as s:
            for n, (category, days, send_status) in enumerate(sent):
                # each send needs its own campaign: (campaign_id, contact_id) is unique
                c = Campaign(name=f"c{n}", category=category, template="t", created_by="x")
                s.add(c)
                s.flush()
                s.add(
                    Send(
                        campaign_id=c.id,
                        contact_id=contact.id,
                        organization_id=orgs[key].id,
                        category=category,
                        email=contact.email,
                        status=send_status,
                        sent_at=NOW - dt.timedelta(days=days, hours=-1),
                    )
                )
        values = {**{"country": "US", "agreement_ended_on": None}, **ORGS[key]}
        rows.append(
            Row(
                id=contact.id,
                kind=values["kind"],
                industry=values["industry"],
                employees=values["benefit_eligible_employees"],
                city=values["city"],
                state=values["state"],
                postal_code=values["postal_code"],
                country=values["country"],
                tags=TAGS.get(key, []),
                manager=MANAGERS.get(key),
                started=values["agreement_started_on"],
                ended=values["agreement_ended_on"],
                title=title,
                primary=primary,
                received=[(c, d) for c, d, st_ in sent if st_ == "sent"],
            )
        )
    return rows


def active(r: Row) -> bool:
    return r.started is not None and r.started <= TODAY and (r.ended is None or r.ended > TODAY)


def ended(r: Row) -> bool:
    return r.ended is not None and r.ended <= TODAY


def has(value: Any, test: Callable[[Any], bool]) -> bool:
    """Unknown values fail every positive test (and so pass every negated one)."""
    return value is not None and test(value)


#: (rule, Python predicate over Row): the SQL must select exactly the rows the predicate accepts.
CASES: list[tuple[str, Callable[[Row], bool]]] = [
    ("everyone", lambda r: True),
    ("not everyone", lambda r: False),
    ("kind = client", lambda r: r.kind == "client"),
    ("kind = CLIENT", lambda r: r.kind == "client"),
    ('kind = "prospect"', lambda r: r.kind == "prospect"),
    ("kind != client", lambda r: r.kind != "client"),
    ("kind in (client)", lambda r: r.kind == "client"),
    ("kind not in (prospect)", lambda r: r.kind != "prospect"),
    ('industry = "HEALTHCARE"', lambda r: r.industry.lower() == "healthcare"),
    ('industry != "healthcare"', lambda r: r.industry.lower() != "healthcare"),
    ('industry in ("education", "Retail")', lambda r: r.industry in ("education", "retail")),
    ('industry not in ("healthcare")', lambda r: r.industry.lower() != "healthcare"),
    ('industry contains "CARE"', lambda r: "care" in r.industry.lower()),
    ('industry not contains "care"', lambda r: "care" not in r.industry.lower()),
    ('industry starts with "edu"', lambda r: r.industry.startswith("edu")),
    ('industry not starts with "edu"', lambda r: not r.industry.startswith("edu")),
    ('industry contains "_50%"', lambda r: "_50%" in r.industry),
    ('industry contains "%"', lambda r: "%" in r.industry),
    ('industry contains "h_"', lambda r: "h_" in r.industry),
    ("industry is empty", lambda r: r.industry == ""),
    ("industry is not empty", lambda r: r.industry != ""),
    ("employees = 50", lambda r: r.employees == 50),
    ("employees != 50", lambda r: r.employees != 50),
    ("employees < 100", lambda r: has(r.employees, lambda v: v < 100)),
    ("employees <= 50", lambda r: has(r.employees, lambda v: v <= 50)),
    ("employees > 500", lambda r: has(r.employees, lambda v: v > 500)),
    ("employees >= 500", lambda r: has(r.employees, lambda v: v >= 500)),
    ("employees in (50, 500)", lambda r: r.employees in (50, 500)),
    ("employees not in (50, 500)", lambda r: r.employees not in (50, 500)),
    ("employees between 50 and 500", lambda r: has(r.employees, lambda v: 50 <= v <= 500)),
    ("employees not between 50 and 500", lambda r: not has(r.employees, lambda v: 50 <= v <= 500)),
    ("employees is empty", lambda r: r.employees is None),
    ("employees is not empty", lambda r: r.employees is not None),
    ('state = "or"', lambda r: r.state == "OR"),
    ('state in ("OR", "wa")', lambda r: r.state in ("OR", "WA")),
    ("state is empty", lambda r: r.state == ""),
    ('city = "bend"', lambda r: r.city == "Bend"),
    ('city starts with "SEA"', lambda r: r.city.startswith("Sea")),
    ('city = "Zürich"', lambda r: r.city == "Zürich"),
    ('postal_code starts with "97"', lambda r: r.postal_code.startswith("97")),
    ('postal_code in ("97702", "8001")', lambda r: r.postal_code in ("97702", "8001")),
    ('country = "ch"', lambda r: r.country == "CH"),
    ('country != "US"', lambda r: r.country != "US"),
    ('tag = "VIP"', lambda r: "vip" in r.tags),
    ('tag != "vip"', lambda r: "vip" not in r.tags),
    ('tag in ("west", "former")', lambda r: bool({"west", "former"} & set(r.tags))),
    ('tag not in ("west")', lambda r: "west" not in r.tags),
    ('tag contains "east"', lambda r: any("east" in t.lower() for t in r.tags)),
    ('tag starts with "retail"', lambda r: any(t.lower().startswith("retail") for t in r.tags)),
    ("tag is empty", lambda r: not r.tags),
    ("tag is not empty", lambda r: bool(r.tags)),
    ('account_manager = "ALICE"', lambda r: r.manager == "alice"),
    ('account_manager != "alice"', lambda r: r.manager != "alice"),
    ('account_manager in ("alice", "bob")', lambda r: r.manager in ("alice", "bob")),
    ('account_manager starts with "b"', lambda r: r.manager == "bob"),
    ("account_manager is empty", lambda r: r.manager is None),
    ("client_since < 2019-01-01", lambda r: has(r.started, lambda v: v < dt.date(2019, 1, 1))),
    ("client_since >= 2026-05-01", lambda r: has(r.started, lambda v: v >= dt.date(2026, 5, 1))),
    ("client_since = 2020-01-01", lambda r: r.started == dt.date(2020, 1, 1)),
    (
        "client_since between 2016-01-01 and 2020-12-31",
        lambda r: has(r.started, lambda v: dt.date(2016, 1, 1) <= v <= dt.date(2020, 12, 31)),
    ),
    (
        "client_since >= 60 days ago",
        lambda r: has(r.started, lambda v: v >= TODAY - dt.timedelta(days=60)),
    ),
    ("client_since > today", lambda r: has(r.started, lambda v: v > TODAY)),
    (
        "client_since between 2015-06-01 and 1 month ago",
        lambda r: has(r.started, lambda v: dt.date(2015, 6, 1) <= v <= dt.date(2026, 5, 15)),
    ),
    ("client_since is empty", lambda r: r.started is None),
    ("agreement = active", active),
    ("agreement = ended", ended),
    ("agreement != active", lambda r: not active(r)),
    ("agreement in (active, ended)", lambda r: active(r) or ended(r)),
    ("agreement not in (ended)", lambda r: not ended(r)),
    ("agreement_ended > 1 year ago", lambda r: has(r.ended, lambda v: v > dt.date(2025, 6, 15))),
    ("agreement_ended = 2026-04-01", lambda r: r.ended == dt.date(2026, 4, 1)),
    ("agreement_ended is empty", lambda r: r.ended is None),
    ('contact.title = "hr"', lambda r: r.title == "HR"),
    ('contact.title contains "hr"', lambda r: "hr" in r.title.lower()),
    ("contact.primary = true", lambda r: r.primary),
    ("contact.primary = no", lambda r: not r.primary),
    ("contact.primary != true", lambda r: not r.primary),
    ("received promotions within 30 days", lambda r: r.got("promotions", 30)),
    ("received promotions within 60 days", lambda r: r.got("promotions", 60)),
    ("not received promotions within 30 days", lambda r: not r.got("promotions", 30)),
    ("received features within 30 days", lambda r: r.got("features", 30)),
    ("received any within 7 days", lambda r: r.got("any", 7)),
    (
        '(kind = prospect or kind = client) and not (state = "OR")',
        lambda r: r.state != "OR",
    ),
    (
        'kind = prospect and industry in ("healthcare", "education") and employees between 50 '
        'and 500 and state in ("OR", "WA") and not received promotions within 30 days',
        lambda r: (
            r.kind == "prospect"
            and r.industry in ("healthcare", "education")
            and has(r.employees, lambda v: 50 <= v <= 500)
            and r.state in ("OR", "WA")
            and not r.got("promotions", 30)
        ),
    ),
]


def selected(rt, rule_text: str | None, category: str = "promotions", **kw: Any) -> dict[int, Any]:
    rule = parse_rule(rule_text) if rule_text is not None else None
    sel = audience_select(rule, Category(category), today=TODAY, now=NOW, **kw)
    with rt.sessions() as s:
        return {row.contact_id: row.skip_reason for row in s.execute(sel)}


def test_every_field_and_operator_selects_what_python_filtering_selects(rt, world) -> None:
    wrong = []
    for rule_text, predicate in CASES:
        expected = {r.id for r in world if predicate(r)}
        got = set(selected(rt, rule_text))
        if got != expected:
            wrong.append((rule_text, sorted(got - expected), sorted(expected - got)))
    # each line: rule, selected but not expected, expected but not selected
    assert not wrong, "\n".join(map(str, wrong))


def test_the_cases_cover_every_field_and_operator() -> None:
    texts = " ".join(text for text, _ in CASES)
    for name in FIELDS:
        assert name in texts, name
    for op in ("!=", "<=", ">=", " in ", "not in", "between", "contains", "starts with", "empty"):
        assert op in texts, op


def test_a_naive_clock_is_refused_before_any_sql() -> None:
    with pytest.raises(ValueError, match="naive"):
        audience_select(None, Category.POLICY, today=TODAY, now=NOW.replace(tzinfo=None))


def test_no_rule_means_every_contact(rt, world) -> None:
    assert set(selected(rt, None)) == {r.id for r in world}


def test_the_select_has_the_columns_planning_relies_on(rt) -> None:
    sel = audience_select(None, Category.POLICY, today=TODAY, now=NOW)
    assert [c.name for c in sel.selected_columns] == [
        "contact_id",
        "organization_id",
        "email",
        "skip_reason",
    ]


def test_planning_can_insert_the_select_into_the_send_log(rt, world) -> None:
    # Given a campaign, when its sends are planned with INSERT … SELECT from the audience
    with rt.sessions.begin() as s:
        campaign = Campaign(name="plan", category="promotions", template="t", created_by="x")
        s.add(campaign)
        s.flush()
        sub = audience_select(
            parse_rule('state = "OR"'), Category.PROMOTIONS, today=TODAY, now=NOW
        ).subquery()
        s.execute(
            insert(Send).from_select(
                [
                    "campaign_id",
                    "contact_id",
                    "organization_id",
                    "category",
                    "email",
                    "status",
                    "skip_reason",
                ],
                select(
                    literal(campaign.id),
                    sub.c.contact_id,
                    sub.c.organization_id,
                    literal("promotions"),
                    sub.c.email,
                    case((sub.c.skip_reason.is_(None), "queued"), else_="skipped"),
                    func.coalesce(sub.c.skip_reason, ""),
                ),
            )
        )
        campaign_id = campaign.id
    # then one send row exists per contact in Oregon, the inactive one skipped
    with rt.sessions() as s:
        rows = s.execute(
            select(Send.contact_id, Send.status, Send.skip_reason).where(
                Send.campaign_id == campaign_id
            )
        ).all()
    assert {r.contact_id for r in rows} == {r.id for r in world if r.state == "OR"}
    assert {(r.status, r.skip_reason) for r in rows} == {("queued", ""), ("skipped", "inactive")}


def test_between_with_mixed_dates_in_the_wrong_order_fails_at_compile_time(rt) -> None:
    rule = parse_rule("client_since between 10 days ago and 2020-01-01")
    with pytest.raises(RuleError, match="the low end comes first"):
        audience_select(rule, Category.PROMOTIONS, today=TODAY, now=NOW)


INJECTIONS = [
    "'; DROP TABLE contacts; --",
    '"; DROP TABLE contacts; --',
    "Robert'); DELETE FROM organizations WHERE ('1'='1",
    "x' OR '1'='1",
    "100% off_",
    "back\\slash",
    "日本語 ☃ 🎉",
    "' UNION SELECT id, organization_id, email, NULL FROM contacts --",
]


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_injection_attempts_in_text_values_match_literally_and_change_nothing(
    rt, make_org, make_contact
) -> None:
    contacts = {text: make_contact(organization=make_org(city=text[:100])) for text in INJECTIONS}
    plain = make_contact(organization=make_org(city="Bend"))
    for text in contacts:
        for rule_text in (
            f"city = {quote(text)}",
            f"city in ({quote(text)}, {quote('nowhere')})",
            f"city starts with {quote(text[:5])} and city contains {quote(text[3:])}",
        ):
            got = selected(rt, rule_text)
            expected = {c.id for t, c in contacts.items() if _matches(rule_text, t, text)}
            assert set(got) == expected, rule_text
    # the tables are intact
    assert plain.id in selected(rt, "everyone")
    assert {"contacts", "organizations"} <= set(inspect(rt.engine).get_table_names())


def _matches(rule_text: str, city: str, text: str) -> bool:
    if rule_text.startswith("city = ") or rule_text.startswith("city in"):
        return city.lower() == text.lower()
    return city.lower().startswith(text[:5].lower()) and text[3:].lower() in city.lower()


_NEEDLE = st.text(
    alphabet=st.sampled_from(list("abcdelnor '\";-%_\\()=*/中€🎉")), min_size=0, max_size=8
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(needle=_NEEDLE)
def test_any_text_value_is_a_literal_never_sql(rt, make_org, make_contact, needle: str) -> None:
    cities = ["Bend", "o'reilly", 'say "hi"', "50%_off", "a\\b", "中文 city", "-- comment"]
    existing = {row: None for row in selected(rt, "everyone")}
    if not existing:
        for city in cities:
            make_contact(organization=make_org(city=city))
    with rt.sessions() as s:
        by_id = dict(s.execute(select(Contact.id, Organization.city).join(Organization)).all())
    got = set(selected(rt, f"city contains {quote(needle)}"))
    assert got == {cid for cid, city in by_id.items() if needle.lower() in city.lower()}
    got = set(selected(rt, f"city = {quote(needle)}"))
    assert got == {cid for cid, city in by_id.items() if needle.lower() == city.lower()}


def _quoted(text: str) -> str:
    return quote(text)


_SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=0, max_size=12
)
_DATES = st.one_of(
    st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)).map(dt.date.isoformat),
    st.tuples(st.integers(0, 99), st.sampled_from(["days", "weeks", "months", "years"])).map(
        lambda t: f"{t[0]} {t[1]} ago"
    ),
    st.just("today"),
)
_STATE_CODES = st.sampled_from(sorted(US_STATES)).map(_quoted)
_VALUES = {
    "text": _SAFE_TEXT.map(_quoted),
    "number": st.integers(0, 2_000_000).map(str),
    "date": _DATES,
}


@st.composite
def _conditions(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(FIELDS)))
    kind = FIELDS[name].type.value
    if kind in ("choice", "true/false"):
        choices = FIELDS[name].choices
        values = st.sampled_from(choices)
        op = draw(st.sampled_from(["=", "!=", "in", "not in"] if kind == "choice" else ["=", "!="]))
    else:
        # a state is a two-letter code: any other text is an error that names the code to write
        values = _STATE_CODES if name == "state" else _VALUES[kind]
        ops = ["=", "!=", "in", "not in", "is empty", "is not empty"]
        ops += ["contains", "starts with"] if kind == "text" else ["<", ">=", "between"]
        op = draw(st.sampled_from(ops))
    if op in ("in", "not in"):
        return f"{name} {op} ({', '.join(draw(st.lists(values, min_size=1, max_size=3)))})"
    if op.startswith("is"):
        return f"{name} {op}"
    if op == "between":
        low, high = sorted(
            [draw(st.integers(0, 5000)), draw(st.integers(0, 5000))]
            if kind == "number"
            else [draw(st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1))) for _ in "ab"]
        )
        return f"{name} between {low} and {high}"
    return f"{name} {op} {draw(values)}"


_RECEIVED = st.tuples(
    st.sampled_from(["features", "promotions", "service", "policy", "any"]),
    st.integers(1, 400),
).map(lambda t: f"received {t[0]} within {t[1]} days")
_RULES = st.recursive(
    st.one_of(_conditions(), _RECEIVED, st.just("everyone")),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " or "]), inner).map(
            lambda t: f"({t[0]}{t[1]}{t[2]})"
        ),
        inner.map(lambda r: f"not {r}"),
    ),
    max_leaves=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rule_text=_RULES, category=st.sampled_from(list(Category)))
def test_any_well_formed_rule_parses_and_runs(rt, rule_text: str, category: Category) -> None:
    rule = parse_rule(rule_text)
    with rt.sessions() as s:
        s.execute(audience_select(rule, category, today=TODAY, now=NOW)).all()


def test_the_largest_rule_allowed_runs_on_the_database(rt) -> None:
    from mailer.rules.parser import MAX_CONDITIONS

    text = " or ".join(f'(city = "c{n}" and not state = "OR")' for n in range(MAX_CONDITIONS // 2))
    rule = parse_rule(text)
    now = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    with rt.sessions() as session:
        counts = count_by_reason(
            session, audience_select(rule, Category.PROMOTIONS, today=now.date(), now=now)
        )
    assert sum(counts.values()) == 0
