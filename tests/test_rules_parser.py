"""The rule language: what parses into which tree, and what fails with which message."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from mailer.contacts.states import STATE_NAMES
from mailer.enums import Category
from mailer.errors import RuleError
from mailer.rules import audience_select, parse_rule
from mailer.rules import nodes as n
from mailer.rules.checker import resolve_date

TODAY = dt.date(2026, 6, 15)
NOW = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
EXAMPLE = (
    'kind = prospect and industry in ("healthcare", "education") and employees between 50 and 500'
    ' and state in ("OR", "WA") and not received promotions within 30 days'
)


def test_the_example_rule_of_the_issue_parses_into_five_conditions() -> None:
    rule = parse_rule(EXAMPLE)
    assert isinstance(rule.expr, n.And)
    kinds = [type(o).__name__ for o in rule.expr.operands]
    assert kinds == ["Compare", "InList", "Between", "InList", "Not"]
    received = rule.expr.operands[-1].operand  # type: ignore[union-attr]
    assert received == n.Received("promotions", 30, n.Pos(1, 128), n.Pos(1, 137))


def test_and_binds_tighter_than_or_and_parentheses_override() -> None:
    loose = parse_rule('kind = client or kind = prospect and state = "OR"').expr
    assert isinstance(loose, n.Or) and isinstance(loose.operands[1], n.And)
    grouped = parse_rule('(kind = client or kind = prospect) and state = "OR"').expr
    assert isinstance(grouped, n.And) and isinstance(grouped.operands[0], n.Or)


def test_keywords_fields_and_choices_ignore_case() -> None:
    rule = parse_rule('KIND = Prospect AND NOT Industry IN ("x") Or contact.Primary = TRUE')
    assert isinstance(rule.expr, n.Or)


def test_comments_and_line_breaks_are_ignored() -> None:
    rule = parse_rule('# prospects only\nkind = prospect  # the kind\n\nand state = "OR" # end')
    assert isinstance(rule.expr, n.And) and len(rule.expr.operands) == 2


def test_every_operator_parses() -> None:
    for text in [
        "employees = 5",
        "employees != 5",
        "employees <> 5",
        "employees < 5",
        "employees <= 5",
        "employees > 5",
        "employees >= 5",
        "employees in (1, 2, 3)",
        "employees not in (1)",
        "employees between 1 and 2",
        "employees not between 1 and 2",
        'city contains "end"',
        'city not contains "end"',
        'postal_code starts with "97"',
        'postal_code not starts with "97"',
        "industry is empty",
        "industry is not empty",
        "received service within 1 day",
        "not received any within 7 days",
        "everyone",
        "client_since >= 2020-01-01",
        "client_since between 2 years ago and today",
        "agreement_ended > 3 months ago",
        "client_since < 1 week ago",
        "employees >= 1_000",
        'industry = \'single quotes\' and city = "say \\"hi\\""',
    ]:
        parse_rule(text)


def test_strings_keep_their_content_unchanged() -> None:
    rule = parse_rule('city = "Bend\'s \\"best\\" \\\\ Zürich"')
    assert isinstance(rule.expr, n.Compare)
    assert rule.expr.value == n.Text('Bend\'s "best" \\ Zürich', n.Pos(1, 8))


def test_relative_dates_count_back_from_today() -> None:
    today = dt.date(2024, 3, 31)
    assert resolve_date(n.RelativeDate(90, "day", n.Pos(1, 1)), today) == dt.date(2024, 1, 1)
    assert resolve_date(n.RelativeDate(2, "week", n.Pos(1, 1)), today) == dt.date(2024, 3, 17)
    assert resolve_date(n.RelativeDate(1, "month", n.Pos(1, 1)), today) == dt.date(2024, 2, 29)
    assert resolve_date(n.RelativeDate(1, "year", n.Pos(1, 1)), today) == dt.date(2023, 3, 31)
    leap = dt.date(2024, 2, 29)
    assert resolve_date(n.RelativeDate(1, "year", n.Pos(1, 1)), leap) == dt.date(2023, 2, 28)


MALFORMED = [
    ("employes > 5", "<rule>:1:1: unknown field 'employes'; did you mean 'employees'?"),
    (
        "kind = customer",
        "<rule>:1:8: kind is client or prospect, not 'customer'; did you mean 'client'?",
    ),
    (
        'employees > "many"',
        '<rule>:1:13: employees is a number (number of benefit-eligible employees); "many" is text',
    ),
    (
        "industry = healthcare",
        '<rule>:1:12: industry is text; write the value in double quotes: "healthcare"',
    ),
    (
        "state = OR",
        "<rule>:1:9: expected a value after '=', found 'OR'; if you mean the text, "
        'write it in double quotes: "OR"',
    ),
    (
        "employees between 500 and 50",
        "<rule>:1:19: employees between 500 and 50 matches nothing: the low end comes first; "
        "write between 50 and 500",
    ),
    ("industry in ()", "<rule>:1:14: the list after 'in' is empty; give at least one value"),
    (
        "received promotion within 30 days",
        "<rule>:1:10: unknown category 'promotion'; did you mean 'promotions'?",
    ),
    (
        "(kind = client",
        "<rule>:1:15: expected ')' to close the '(' at 1:1, found the end of the rule",
    ),
    ("kind = client)", "<rule>:1:14: unexpected ')'; this ')' has no matching '('"),
    (
        "client_since > 2020",
        "<rule>:1:16: client_since is a date (the day the agreement started); 2020 is a number; "
        "write dates like 2024-01-31 or 90 days ago",
    ),
    ('city = "Bend', '<rule>:1:8: text starting here has no closing "'),
    (
        'employees > 5 state = "OR"',
        "<rule>:1:15: unexpected 'state'; join conditions with 'and' or 'or'",
    ),
    (
        "# nothing\n",
        "<rule>:2:1: the rule is empty; write a condition such as kind = client, or everyone",
    ),
    (
        "kind > client",
        "<rule>:1:1: '>' does not apply to kind (choice: client or prospect); use =, !=, in",
    ),
    (
        "received promotions within 30",
        "<rule>:1:30: expected 'days' after the number, found the end of the rule",
    ),
    (
        "employees > 1e5",
        "<rule>:1:13: '1e5' is not a number or a date; write integers like 500 "
        "and dates like 2024-01-31",
    ),
    ("client_since = 2024-02-30", "<rule>:1:16: 2024-02-30 is not a date in the calendar"),
    (
        "contact.primary = maybe",
        "<rule>:1:19: contact.primary is true or false, not 'maybe'",
    ),
    ("kind = client and", "<rule>:1:18: expected a condition, found the end of the rule"),
    ("employees ! 5", "<rule>:1:11: '!' is not an operator; write != or not"),
    (
        "received promotions within 0 days",
        "<rule>:1:1: 'within' needs between 1 and 36500 days",
    ),
    ("employees >= 99999999999", "<rule>:1:14: 99999999999 is too large for employees"),
    (
        'state = "Oregon"',
        '<rule>:1:9: state holds two-letter state codes; "Oregon" matches nobody: '
        'did you mean "OR"?',
    ),
    (
        'state in ("OR", "Washington")',
        '<rule>:1:17: state holds two-letter state codes; "Washington" matches nobody: '
        'did you mean "WA"?',
    ),
    (
        'state != "new  york"',
        '<rule>:1:10: state holds two-letter state codes; "new  york" matches nobody: '
        'did you mean "NY"?',
    ),
    (
        'state = "Oregn"',
        '<rule>:1:9: state holds two-letter state codes; "Oregn" matches nobody: '
        'did you mean "OR"?',
    ),
    (
        'state = "Narnia"',
        '<rule>:1:9: state holds two-letter state codes, and "Narnia" is none; '
        'write the code, e.g. "OR" for Oregon',
    ),
]


def test_every_state_name_suggests_its_code() -> None:
    for code, name in STATE_NAMES.items():
        with pytest.raises(RuleError) as caught:
            parse_rule(f'state = "{name}"')
        assert caught.value.suggestion == code, name
        parse_rule(f'state = "{code.lower()}" or state starts with "{name[:2]}"')


@pytest.mark.parametrize(("text", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_rule_names_the_place_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    first_line = str(caught.value).splitlines()[0]
    assert first_line == message


def test_error_shows_the_line_with_a_caret_under_the_column() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule("kind = prospect\n  and employes > 50", source="audiences/x.toml")
    assert str(caught.value) == (
        "audiences/x.toml:2:7: unknown field 'employes'; did you mean 'employees'?\n"
        "      and employes > 50\n"
        "          ^"
    )
    assert (caught.value.line, caught.value.column) == (2, 7)
    assert caught.value.suggestion == "employees"


def test_nesting_deeper_than_the_limit_is_a_rule_error_not_a_crash() -> None:
    with pytest.raises(RuleError, match="nests deeper"):
        parse_rule("(" * 500 + "everyone" + ")" * 500)
    with pytest.raises(RuleError, match="nests deeper"):
        parse_rule("not " * 500 + "everyone")


def test_a_rule_with_too_many_conditions_is_a_rule_error_naming_where() -> None:
    text = " or\n".join(f'city = "c{n}"' for n in range(300))
    with pytest.raises(RuleError, match=r"more than 200 conditions") as caught:
        parse_rule(text)
    assert (caught.value.line, caught.value.column) == (201, 1)
    assert "in (" in str(caught.value)  # the fix: one in-list instead of many ors
    # the 3,000 terms that crashed SQLite are refused as well, before any SQL
    with pytest.raises(RuleError):
        parse_rule(" or ".join(f'city = "c{n}"' for n in range(3000)))


def test_a_rule_longer_than_the_limit_is_a_rule_error() -> None:
    text = "city in (" + ", ".join(f'"{n:05d}"' for n in range(900)) + ")" + " " * 20_000
    with pytest.raises(RuleError, match=r"longer than 20,000 characters"):
        parse_rule(text)


def test_control_characters_in_text_are_refused() -> None:
    with pytest.raises(RuleError, match="unprintable character U\\+0000"):
        parse_rule('city = "a\x00b"')


_WORDS = [
    "kind",
    "and",
    "or",
    "not",
    "in",
    "between",
    "received",
    "within",
    "days",
    "ago",
    "employees",
    "city",
    "tag",
    "is",
    "empty",
    "contact.primary",
    "starts",
    "with",
    "contains",
    "true",
    "client",
    "2024-01-01",
    "promotions",
    "today",
]
_ALPHABET = st.sampled_from([*"()=!<>,\"'#\\.-_ \n\t0123456789", *_WORDS, "é", "\x00", "\ud800"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map(" ".join))
def test_random_token_soup_parses_or_fails_with_a_rule_error(text: str) -> None:
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        assert exc.line >= 1 and exc.column >= 1
        str(exc)
        return
    # what parses also compiles, for every category and both dialects
    for category in Category:
        try:
            sel = audience_select(rule, category, today=TODAY, now=NOW)
        except RuleError as exc:
            assert "low end comes first" in exc.message
            return
        sel.compile(dialect=postgresql.dialect())
        sel.compile(dialect=sqlite.dialect())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_text_parses_or_fails_with_a_rule_error(text: str) -> None:
    with contextlib.suppress(RuleError):
        parse_rule(text)
