"""Type checking of a parsed rule, before any SQL exists: fields, operators, values, ranges."""

from __future__ import annotations

import datetime as dt
import difflib

from mailer.enums import Category
from mailer.errors import RuleError
from mailer.rules import nodes as n
from mailer.rules.fields import (
    BOOL_WORDS,
    FIELDS,
    OPERATOR_ORDER,
    OPERATORS,
    Field,
    FieldType,
    suggest_field,
)

#: `received any within …` counts mail of every category.
ANY_CATEGORY = "any"
#: Relative dates and frequency caps reach back at most this far.
MAX_DAYS = 36_500
_UNIT_DAYS = {"day": 1, "week": 7, "month": 31, "year": 366}
#: Numbers must fit a 32-bit integer column.
MAX_NUMBER = 2_147_483_647


def check(rule: n.Rule) -> None:
    """Raise RuleError at the first problem in `rule` (depth-first, left to right)."""
    _Checker(rule).visit(rule.expr)


def resolve_date(value: n.IsoDate | n.RelativeDate, today: dt.date) -> dt.date:
    """The calendar day a date value names, counting relative dates back from `today`."""
    if isinstance(value, n.IsoDate):
        return value.value
    if value.unit in ("day", "week"):
        return today - dt.timedelta(days=value.amount * _UNIT_DAYS[value.unit])
    months = value.amount * (12 if value.unit == "year" else 1)
    year, month = divmod(today.year * 12 + today.month - 1 - months, 12)
    month += 1
    # the 31st of a month one month back from March 31st is the last day of February
    for day in range(today.day, 27, -1):
        try:
            return dt.date(year, month, day)
        except ValueError:
            continue
    return dt.date(year, month, min(today.day, 28))


def operator_name(condition: n.Condition) -> str:
    match condition:
        case n.Compare(op=op):
            return op
        case n.InList():
            return "in"
        case n.Between():
            return "between"
        case n.Match(op=op):
            return op
        case n.IsEmpty():
            return "is empty"
    raise AssertionError(condition)


class _Checker:
    def __init__(self, rule: n.Rule) -> None:
        self.rule = rule

    def error(self, message: str, pos: n.Pos, suggestion: str | None = None) -> RuleError:
        return RuleError(
            message,
            source=self.rule.source,
            text=self.rule.text,
            line=pos.line,
            column=pos.column,
            suggestion=suggestion,
        )

    def visit(self, expr: n.Expr) -> None:
        match expr:
            case n.And(operands=operands) | n.Or(operands=operands):
                for operand in operands:
                    self.visit(operand)
            case n.Not(operand=operand):
                self.visit(operand)
            case n.Everyone():
                pass
            case n.Received():
                self.received(expr)
            case _:
                self.condition(expr)

    def received(self, expr: n.Received) -> None:
        known = [*Category, ANY_CATEGORY]
        if expr.category not in known:
            close = difflib.get_close_matches(expr.category, known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; use one of {', '.join(known)}"
            raise self.error(
                f"unknown category '{expr.category}'{hint}",
                expr.category_pos,
                close[0] if close else None,
            )
        if not 1 <= expr.days <= MAX_DAYS:
            raise self.error(f"'within' needs between 1 and {MAX_DAYS} days", expr.pos)

    def condition(self, cond: n.Condition) -> None:
        field = FIELDS.get(cond.field)
        if field is None:
            guess = suggest_field(cond.field)
            hint = f"; did you mean '{guess}'?" if guess else f"; fields are {', '.join(FIELDS)}"
            raise self.error(f"unknown field '{cond.field}'{hint}", cond.pos, guess)
        op = operator_name(cond)
        if op not in OPERATORS[field.type]:
            allowed = ", ".join(o for o in OPERATOR_ORDER if o in OPERATORS[field.type])
            raise self.error(
                f"'{op}' does not apply to {field.name} ({field.type}: {field.description}); "
                f"use {allowed}",
                cond.pos,
            )
        match cond:
            case n.Compare(value=value) | n.Match(value=value):
                self.value(field, value)
                if isinstance(cond, n.Compare):
                    self.code(field, value)
            case n.InList(values=values):
                for value in values:
                    self.value(field, value)
                    self.code(field, value)
            case n.Between(low=low, high=high):
                self.value(field, low)
                self.value(field, high)
                self.ordered(field, low, high)

    def value(self, field: Field, value: n.Value) -> None:
        shown = _show(value)
        plain = shown.strip('"')
        match field.type, value:
            case FieldType.TEXT, n.Text():
                return
            case FieldType.TEXT, _:
                raise self.error(
                    f'{field.name} is text; write the value in double quotes: "{plain}"',
                    value.pos,
                )
            case FieldType.NUMBER, n.Number(value=number):
                if number > MAX_NUMBER:
                    raise self.error(f"{number} is too large for {field.name}", value.pos)
                return
            case FieldType.DATE, n.IsoDate():
                return
            case FieldType.DATE, n.RelativeDate(amount=amount, unit=unit):
                if amount * _UNIT_DAYS[unit] > MAX_DAYS:
                    raise self.error(f"{shown} is too far back (the limit is 100 years)", value.pos)
                return
            case FieldType.ENUM | FieldType.BOOL, n.Word() | n.Text():
                choices = BOOL_WORDS if field.type is FieldType.BOOL else field.choices
                word = value.value.lower()
                if word in choices:
                    return
                guess = field.suggest_choice(word)
                hint = f"; did you mean '{guess}'?" if guess else ""
                raise self.error(
                    f"{field.name} is {' or '.join(field.choices)}, not '{value.value}'{hint}",
                    value.pos,
                    guess,
                )
        hint = (
            "; write dates like 2024-01-31 or 90 days ago" if field.type is FieldType.DATE else ""
        )
        raise self.error(
            f"{field.name} is a {field.type} ({field.description}); "
            f"{shown} is {_kind(value)}{hint}",
            value.pos,
        )

    def code(self, field: Field, value: n.Value) -> None:
        """A field of codes compared with something else matches nobody: say which code."""
        if field.code_for is None or not isinstance(value, n.Text):
            return
        if not value.value.strip() or value.value.strip().upper() in field.codes:
            return
        code = field.code_for(value.value)
        if code is not None:
            raise self.error(
                f'{field.name} holds {field.description}s; "{value.value}" matches nobody: '
                f'did you mean "{code}"?',
                value.pos,
                code,
            )
        raise self.error(
            f'{field.name} holds {field.description}s, and "{value.value}" is none; '
            f'write the code, e.g. "OR" for Oregon',
            value.pos,
        )

    def ordered(self, field: Field, low: n.Value, high: n.Value) -> None:
        """`between` wants its low end first (mixed relative and ISO dates: checked at compile)."""
        if isinstance(low, n.Number) and isinstance(high, n.Number):
            low_key, high_key = low.value, high.value
        elif isinstance(low, n.IsoDate) and isinstance(high, n.IsoDate):
            low_key, high_key = low.value.toordinal(), high.value.toordinal()
        elif isinstance(low, n.RelativeDate) and isinstance(high, n.RelativeDate):
            reference = dt.date(2000, 1, 1)
            low_key = resolve_date(low, reference).toordinal()
            high_key = resolve_date(high, reference).toordinal()
        else:
            return
        if low_key > high_key:
            raise between_error(self.rule, field.name, low, high)


def between_error(rule: n.Rule, field: str, low: n.Value, high: n.Value) -> RuleError:
    return RuleError(
        f"{field} between {_show(low)} and {_show(high)} matches nothing: the low end comes "
        f"first; write between {_show(high)} and {_show(low)}",
        source=rule.source,
        text=rule.text,
        line=low.pos.line,
        column=low.pos.column,
    )


def _show(value: n.Value) -> str:
    match value:
        case n.RelativeDate(amount=0):
            return "today"
        case n.RelativeDate(amount=amount, unit=unit):
            return f"{amount} {unit}{'' if amount == 1 else 's'} ago"
        case n.IsoDate(value=day):
            return day.isoformat()
        case n.Text(value=text):
            return f'"{text}"'
    return str(value.value)


def _kind(value: n.Value) -> str:
    match value:
        case n.Text():
            return "text"
        case n.Number():
            return "a number"
        case n.Word():
            return "a bare word"
    return "a date"
