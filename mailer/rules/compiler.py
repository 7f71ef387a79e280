"""Compile a checked rule to SQLAlchemy Core: one select over contacts joined to organizations.

Every literal of the rule becomes a bound parameter; `today` and `now` come from the caller, so
the SQL never reads the database clock and tests control time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    String,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
)

from mailer.enums import Category, SendStatus, SkipReason
from mailer.models import OrganizationTag, Send, User
from mailer.rules import nodes as n
from mailer.rules.checker import ANY_CATEGORY, between_error, resolve_date
from mailer.rules.fields import BOOL_WORDS, FIELDS, FieldType
from mailer.rules.guards import (
    Guard,
    agreement_active,
    agreement_ended,
    contacts,
    guarded_from,
    organizations,
)

tags = OrganizationTag.__table__
users = User.__table__
sends = Send.__table__
_TABLES: dict[str, Any] = {
    "contacts": contacts,
    "organizations": organizations,
    "organization_tags": tags,
    "users": users,
}
#: Fields that live in another table, reached through a correlated EXISTS.
_RELATED: dict[str, Callable[[], ColumnElement[bool]]] = {
    "tag": lambda: tags.c.organization_id == organizations.c.id,
    "account_manager": lambda: users.c.id == organizations.c.account_manager_id,
}
_ORDER_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": lambda c, v: c == v,
    "<": lambda c, v: c < v,
    "<=": lambda c, v: c <= v,
    ">": lambda c, v: c > v,
    ">=": lambda c, v: c >= v,
}


def audience_select(
    rule: n.Rule | None,
    category: Category | str,
    *,
    today: dt.date,
    now: dt.datetime,
    account_manager_id: int | None = None,
    policy_grace_days: int | None = None,
) -> Select[Any]:
    """The contacts `rule` matches (everybody when None), each with the guard that skips it.

    Columns: contact_id, organization_id, email, skip_reason (None when eligible, else the
    SkipReason value of the first guard of `category` that excludes the contact).
    """
    joined, guards, matches = _guarded(
        rule, category, today, now, account_manager_id, policy_grace_days
    )
    skip_reason = case(
        *[(condition, literal(reason.value, String(30))) for condition, reason in guards],
        else_=null(),
    )
    sel = select(
        contacts.c.id.label("contact_id"),
        contacts.c.organization_id.label("organization_id"),
        contacts.c.email.label("email"),
        skip_reason.label("skip_reason"),
    ).select_from(joined)
    return sel if matches is None else sel.where(matches)


def audience_count(
    rule: n.Rule | None,
    category: Category | str,
    *,
    today: dt.date,
    now: dt.datetime,
    account_manager_id: int | None = None,
    policy_grace_days: int | None = None,
) -> tuple[Select[*tuple[int, ...]], list[SkipReason]]:
    """One row counting what `audience_select` selects: the contacts `rule` matches, then per
    guard of `category` those it skips (the first guard that holds); and those guards' reasons.

    Not a GROUP BY of skip_reason: PostgreSQL estimates that CASE's groups at one per contact
    and then never splits the count over its parallel workers. Each count tests its own guard
    first, so an eligible contact costs one test per guard (docs/performance.md §5).
    """
    joined, guards, matches = _guarded(
        rule, category, today, now, account_manager_id, policy_grace_days
    )
    # IS [NOT] TRUE: a guard that is NULL does not hold, as in the CASE of audience_select
    counts: list[ColumnElement[int]] = [func.count()]
    counts += [
        func.count().filter(
            and_(condition.is_(true()), *[earlier.is_not(true()) for earlier, _ in guards[:i]])
        )
        for i, (condition, _) in enumerate(guards)
    ]
    sel = select(*counts).select_from(joined)
    return sel if matches is None else sel.where(matches), [reason for _, reason in guards]


def _guarded(
    rule: n.Rule | None,
    category: Category | str,
    today: dt.date,
    now: dt.datetime,
    account_manager_id: int | None,
    policy_grace_days: int | None,
) -> tuple[FromClause, list[Guard], ColumnElement[bool] | None]:
    """Contacts joined for the guards of `category`, those guards, and the rule's condition."""
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive: pass an aware UTC time (send times are UTC)")
    joined, guards = guarded_from(
        Category(category),
        today=today,
        account_manager_id=account_manager_id,
        policy_grace_days=policy_grace_days,
    )
    matches = None if rule is None else compile_rule(rule, today=today, now=now)
    return joined, guards, matches


def compile_rule(rule: n.Rule, *, today: dt.date, now: dt.datetime) -> ColumnElement[bool]:
    """The WHERE clause of `rule` alone, without guards."""
    return _Compiler(rule, today, now).expr(rule.expr)


class _Compiler:
    def __init__(self, rule: n.Rule, today: dt.date, now: dt.datetime) -> None:
        self.rule = rule
        self.today = today
        self.now = now

    def expr(self, expr: n.Expr) -> ColumnElement[bool]:
        match expr:
            case n.And(operands=operands):
                return and_(*[self.expr(o) for o in operands])
            case n.Or(operands=operands):
                return or_(*[self.expr(o) for o in operands])
            case n.Not(operand=operand):
                return not_(self.expr(operand))
            case n.Everyone():
                return true()
            case n.Received():
                return self.received(expr)
        return self.condition(expr)

    def received(self, expr: n.Received) -> ColumnElement[bool]:
        since = self.now - dt.timedelta(days=expr.days)
        where = [
            sends.c.contact_id == contacts.c.id,
            sends.c.status == SendStatus.SENT.value,
            sends.c.sent_at >= since,  # implies sent_at IS NOT NULL: the partial index's rows
        ]
        if expr.category != ANY_CATEGORY:
            where.append(sends.c.category == expr.category)
        return exists(select(sends.c.id).where(*where))

    def condition(self, cond: n.Condition) -> ColumnElement[bool]:
        field = FIELDS[cond.field]
        if field.name == "agreement":
            return self.agreement(cond)
        table, _, name = field.column.partition(".")
        column = _TABLES[table].c[name]
        negated = getattr(cond, "negated", False)
        if isinstance(cond, n.Compare) and cond.op == "!=":
            cond, negated = n.Compare(cond.field, "=", cond.value, cond.pos), True
        if isinstance(cond, n.IsEmpty):
            positive = self.empty(field.name, column)
        else:
            test = self.test(field.type, column, cond)
            related = _RELATED.get(field.name)
            if related is not None:
                positive = exists(select(column).where(related(), test))
            elif column.nullable:
                # two-valued logic: an unknown value fails `=` and passes `!=`
                positive = and_(column.is_not(None), test)
            else:
                positive = test
        return not_(positive) if negated else positive

    def empty(self, name: str, column: Any) -> ColumnElement[bool]:
        if name == "tag":
            return not_(exists(select(tags.c.tag).where(_RELATED["tag"]())))
        if name == "account_manager":
            return organizations.c.account_manager_id.is_(None)
        if column.nullable:
            return column.is_(None)
        return column == ""

    def test(self, kind: FieldType, column: Any, cond: n.Condition) -> ColumnElement[bool]:
        if kind is FieldType.TEXT:
            return self.text_test(column, cond)
        if isinstance(cond, n.InList):
            return column.in_([self.scalar(kind, v) for v in cond.values])
        if isinstance(cond, n.Between):
            low, high = self.scalar(kind, cond.low), self.scalar(kind, cond.high)
            if low > high:
                raise between_error(self.rule, cond.field, cond.low, cond.high)
            return column.between(low, high)
        assert isinstance(cond, n.Compare)
        value = self.scalar(kind, cond.value)
        if kind is FieldType.BOOL:
            return column == (true() if value else false())
        return _ORDER_OPS[cond.op](column, value)

    def text_test(self, column: Any, cond: n.Condition) -> ColumnElement[bool]:
        # lower() on both sides: the database folds case the same way for column and value
        folded = func.lower(column)
        if isinstance(cond, n.InList):
            return folded.in_([func.lower(_text(_plain(v))) for v in cond.values])
        if isinstance(cond, n.Match):
            pattern = _escape_like(cond.value.value) + "%"
            if cond.op == "contains":
                pattern = "%" + pattern
            return folded.like(func.lower(_text(pattern)), escape="\\")
        assert isinstance(cond, n.Compare)
        return folded == func.lower(_text(_plain(cond.value)))

    def scalar(self, kind: FieldType, value: n.Value) -> Any:
        if isinstance(value, n.IsoDate | n.RelativeDate):
            return resolve_date(value, self.today)
        if kind is FieldType.BOOL:
            return BOOL_WORDS[str(value.value).lower()]
        if kind is FieldType.ENUM:
            return str(value.value).lower()
        return value.value

    def agreement(self, cond: n.Condition) -> ColumnElement[bool]:
        states = {"active": agreement_active(self.today), "ended": agreement_ended(self.today)}
        if isinstance(cond, n.InList):
            positive = or_(*[states[_plain(v).lower()] for v in cond.values])
            return not_(positive) if cond.negated else positive
        assert isinstance(cond, n.Compare)
        positive = states[_plain(cond.value).lower()]
        return not_(positive) if cond.op == "!=" else positive


def _plain(value: n.Value) -> str:
    """A text, word or number value as text (the checker let only those through here)."""
    assert not isinstance(value, n.RelativeDate | n.IsoDate)
    return str(value.value)


def _text(value: Any) -> Any:
    return literal(str(value), String())


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
