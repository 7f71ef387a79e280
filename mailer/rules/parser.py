"""A recursive-descent parser for audience rules: text in, a checked `Rule` out, never `eval`.

    rule      := expr END
    expr      := term ("or" term)*
    term      := factor ("and" factor)*
    factor    := "not" factor | "(" expr ")" | "everyone" | received | condition
    received  := "received" CATEGORY "within" NUMBER ("day" | "days")
    condition := FIELD ( OP value
                       | ["not"] "in" "(" value ("," value)* ")"
                       | ["not"] "between" value "and" value
                       | ["not"] ("contains" | "starts" "with") STRING
                       | "is" ["not"] "empty" )
    value     := STRING | NUMBER | DATE | NUMBER UNIT "ago" | "today" | WORD

Keywords, field names and bare words are case-insensitive.
"""

from __future__ import annotations

import datetime as dt

from mailer.errors import RuleError
from mailer.rules import nodes as n
from mailer.rules.checker import check
from mailer.rules.lexer import Lexer, Token

#: Words with a meaning of their own; they cannot be fields or bare values.
KEYWORDS = frozenset(
    {"and", "or", "not", "in", "between", "contains", "starts", "with", "is", "empty"}
    | {"received", "within", "ago", "everyone"}
)
#: Units of relative dates, singular and plural.
UNITS = {
    "day": "day",
    "days": "day",
    "week": "week",
    "weeks": "week",
    "month": "month",
    "months": "month",
    "year": "year",
    "years": "year",
}
#: Deeper nesting than this is a mistake, and would exhaust Python's stack.
MAX_DEPTH = 50
#: Values in one `in (…)` list; each becomes a bound parameter.
MAX_LIST = 1000
#: Conditions in one rule. Each is a node of the SQL expression, and SQLite refuses a tree
#: deeper than 1,000 (3,000 `or`s failed there); a real audience has a handful.
MAX_CONDITIONS = 200
#: Characters in one rule (a full 1,000-value `in` list fits).
MAX_RULE_CHARS = 20_000


def parse_rule(text: str, source: str = "<rule>") -> n.Rule:
    """Parse and type-check a rule; raise RuleError naming line, column and a fix."""
    lexer = Lexer(text, source)
    if len(text) > MAX_RULE_CHARS:
        raise lexer.error(
            f"the rule is longer than {MAX_RULE_CHARS:,} characters; shorten it, e.g. one "
            "`in (…)` list instead of many conditions",
            MAX_RULE_CHARS,
        )
    parser = _Parser(lexer, lexer.tokens())
    expr = parser.rule()
    rule = n.Rule(text, source, expr)
    check(rule)
    return rule


class _Parser:
    def __init__(self, lexer: Lexer, tokens: list[Token]) -> None:
        self.lexer = lexer
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.conditions = 0

    # --- helpers -------------------------------------------------------------------------

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "END":
            self.index += 1
        return token

    def is_word(self, *words: str) -> bool:
        return self.token.kind == "WORD" and self.token.text in words

    def error(self, message: str, token: Token | None = None) -> RuleError:
        return self.lexer.error(message, (token or self.token).offset)

    def expect_word(self, word: str, why: str) -> Token:
        if not self.is_word(word):
            raise self.error(f"expected '{word}' {why}, found {describe(self.token)}")
        return self.advance()

    # --- grammar -------------------------------------------------------------------------

    def rule(self) -> n.Expr:
        if self.token.kind == "END":
            raise self.error(
                "the rule is empty; write a condition such as kind = client, or everyone"
            )
        expr = self.expr()
        if self.token.kind != "END":
            hint = ""
            if self.token.kind == "RPAREN":
                hint = "; this ')' has no matching '('"
            elif self.tokens[self.index - 1].kind in ("STRING", "NUMBER", "DATE", "RPAREN"):
                hint = "; join conditions with 'and' or 'or'"
            raise self.error(f"unexpected {describe(self.token)}{hint}")
        return expr

    def expr(self) -> n.Expr:
        start = self.token
        operands = [self.term()]
        while self.is_word("or"):
            self.advance()
            operands.append(self.term())
        return operands[0] if len(operands) == 1 else n.Or(tuple(operands), start.pos)

    def term(self) -> n.Expr:
        start = self.token
        operands = [self.factor()]
        while self.is_word("and"):
            self.advance()
            operands.append(self.factor())
        return operands[0] if len(operands) == 1 else n.And(tuple(operands), start.pos)

    def factor(self) -> n.Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the rule nests deeper than {MAX_DEPTH} levels; simplify it")
        try:
            return self._factor()
        finally:
            self.depth -= 1

    def count_condition(self, token: Token) -> None:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise self.error(
                f"the rule has more than {MAX_CONDITIONS} conditions; combine them, e.g. "
                'city in ("Bend", "Salem") instead of city = "Bend" or city = "Salem"',
                token,
            )

    def _factor(self) -> n.Expr:
        token = self.token
        if self.is_word("not"):
            self.advance()
            return n.Not(self.factor(), token.pos)
        if token.kind == "LPAREN":
            self.advance()
            inner = self.expr()
            if self.token.kind != "RPAREN":
                raise self.error(
                    f"expected ')' to close the '(' at {token.pos.line}:{token.pos.column}, "
                    f"found {describe(self.token)}"
                )
            self.advance()
            return inner
        if self.is_word("everyone"):
            self.advance()
            return n.Everyone(token.pos)
        if self.is_word("received"):
            self.count_condition(token)
            return self.received()
        if token.kind == "WORD" and token.text not in KEYWORDS:
            self.count_condition(token)
            return self.condition()
        raise self.error(f"expected a condition, found {describe(token)}")

    def received(self) -> n.Received:
        start = self.advance()
        category = self.token
        if category.kind != "WORD" or category.text in KEYWORDS:
            raise self.error(
                f"expected a category after 'received' (features, promotions, service, "
                f"policy or any), found {describe(category)}"
            )
        self.advance()
        self.expect_word("within", "after the category, as in: received promotions within 30 days")
        days = self.token
        if days.kind != "NUMBER":
            raise self.error(f"expected a number of days after 'within', found {describe(days)}")
        self.advance()
        if self.is_word("day"):
            self.advance()
        else:
            self.expect_word("days", "after the number")
        return n.Received(category.text, _int(days), start.pos, category.pos)

    def condition(self) -> n.Condition:
        field = self.advance()
        name, pos = field.text, field.pos
        if self.token.kind == "OP":
            op = self.advance()
            return n.Compare(name, op.text, self.value(f"after '{op.raw}'"), pos)
        if self.is_word("is"):
            self.advance()
            negated = bool(self.is_word("not") and self.advance())
            self.expect_word("empty", "after 'is' (write: is empty, or: is not empty)")
            return n.IsEmpty(name, negated, pos)
        negated = bool(self.is_word("not") and self.advance())
        if self.is_word("in"):
            self.advance()
            return n.InList(name, self.value_list(), negated, pos)
        if self.is_word("between"):
            self.advance()
            low = self.value("after 'between'")
            self.expect_word("and", "between the two ends, as in: between 50 and 500")
            return n.Between(name, low, self.value("after 'and'"), negated, pos)
        if self.is_word("contains", "starts"):
            how = "contains" if self.advance().text == "contains" else "starts with"
            if how == "starts with":
                self.expect_word("with", "after 'starts'")
            value = self.value(f"after '{how}'")
            if not isinstance(value, n.Text):
                raise self.lexer.error(
                    f"'{how}' needs text in double quotes, as in: {name} {how} \"abc\"",
                    self.tokens[self.index - 1].offset,
                )
            return n.Match(name, how, value, negated, pos)
        raise self.error(
            f"expected an operator after {field.raw!r} (=, !=, <, <=, >, >=, in, between, "
            f"contains, starts with, is empty), found {describe(self.token)}"
        )

    def value_list(self) -> tuple[n.Value, ...]:
        if self.token.kind != "LPAREN":
            raise self.error(f"expected '(' after 'in', found {describe(self.token)}")
        self.advance()
        if self.token.kind == "RPAREN":
            raise self.error("the list after 'in' is empty; give at least one value")
        values = [self.value("in the list")]
        while self.token.kind == "COMMA":
            self.advance()
            values.append(self.value("after ','"))
        if self.token.kind != "RPAREN":
            raise self.error(f"expected ',' or ')' in the list, found {describe(self.token)}")
        if len(values) > MAX_LIST:
            raise self.error(f"the list has {len(values)} values; at most {MAX_LIST} are allowed")
        self.advance()
        return tuple(values)

    def value(self, where: str) -> n.Value:
        token = self.token
        if token.kind == "STRING":
            self.advance()
            return n.Text(token.text, token.pos)
        if token.kind == "DATE":
            self.advance()
            try:
                return n.IsoDate(dt.date.fromisoformat(token.text), token.pos)
            except ValueError:
                raise self.error(f"{token.text} is not a date in the calendar", token) from None
        if token.kind == "NUMBER":
            self.advance()
            if self.token.kind == "WORD" and self.token.text in UNITS:
                unit = self.advance()
                self.expect_word("ago", f"after '{token.raw} {unit.raw}'")
                return n.RelativeDate(_int(token), UNITS[unit.text], token.pos)
            return n.Number(_int(token), token.pos)
        if token.kind == "WORD" and token.text == "today":
            self.advance()
            return n.RelativeDate(0, "day", token.pos)
        if token.kind == "WORD" and token.text not in KEYWORDS:
            self.advance()
            return n.Word(token.text, token.pos)
        hint = ""
        if token.kind == "WORD":
            hint = f'; if you mean the text, write it in double quotes: "{token.raw}"'
        raise self.error(f"expected a value {where}, found {describe(token)}{hint}")


def _int(token: Token) -> int:
    return int(token.text.replace("_", ""))


def describe(token: Token) -> str:
    """How an error message names a token."""
    if token.kind == "END":
        return "the end of the rule"
    if token.kind == "STRING":
        return f"the text {token.raw}"
    return f"'{token.raw}'"
