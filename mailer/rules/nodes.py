"""The typed syntax tree of an audience rule, as the parser builds it and the compiler reads it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    """Where a node starts in the rule text (1-based line and column)."""

    line: int
    column: int


# --- values -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    value: str
    pos: Pos


@dataclass(frozen=True)
class Number:
    value: int
    pos: Pos


@dataclass(frozen=True)
class Word:
    """A bare word: an enum value (`prospect`, `active`) or a boolean (`true`)."""

    value: str
    pos: Pos


@dataclass(frozen=True)
class IsoDate:
    value: dt.date
    pos: Pos


@dataclass(frozen=True)
class RelativeDate:
    """`90 days ago`, `2 years ago`, `today` (amount 0): resolved against the caller's today."""

    amount: int
    unit: str  #: day, week, month or year
    pos: Pos


Value = Text | Number | Word | IsoDate | RelativeDate


# --- conditions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Compare:
    """`field op value` with op one of = != < <= > >=."""

    field: str
    op: str
    value: Value
    pos: Pos


@dataclass(frozen=True)
class InList:
    field: str
    values: tuple[Value, ...]
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class Between:
    """`field between low and high`, both ends included."""

    field: str
    low: Value
    high: Value
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class Match:
    """`field contains "x"` or `field starts with "x"`."""

    field: str
    op: str  #: "contains" or "starts with"
    value: Text
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class IsEmpty:
    field: str
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class Received:
    """`received <category> within <N> days`: the frequency cap (`any` means every category)."""

    category: str
    days: int
    pos: Pos
    category_pos: Pos


@dataclass(frozen=True)
class Everyone:
    """`everyone`: matches every contact (the category guards still apply)."""

    pos: Pos


@dataclass(frozen=True)
class Not:
    operand: Expr
    pos: Pos


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]
    pos: Pos


Condition = Compare | InList | Between | Match | IsEmpty
Expr = Condition | Received | Everyone | Not | And | Or


@dataclass(frozen=True)
class Rule:
    """A parsed and type-checked rule, with the text and source it came from."""

    text: str
    source: str
    expr: Expr
