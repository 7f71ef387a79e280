"""Split rule text into tokens, each with its line and column; comments start with `#`."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from mailer.errors import RuleError
from mailer.rules.nodes import Pos

#: Token kinds: WORD (keywords, fields, bare values), STRING, NUMBER, DATE, OP, LPAREN,
#: RPAREN, COMMA, END.
_PATTERNS = [
    ("SPACE", r"[ \t\r\n\f\v]+"),
    ("COMMENT", r"#[^\n]*"),
    ("DATE", r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![\w-])"),
    ("NUMBER", r"[0-9]+(?:_[0-9]+)*(?![\w.])"),
    ("WORD", r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"),
    ("OP", r"!=|<>|<=|>=|==|=|<|>"),
    ("LPAREN", r"\("),
    ("RPAREN", r"\)"),
    ("COMMA", r","),
    ("STRING", r"\"|'"),
]
_SCANNER = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _PATTERNS))
#: Longer numbers are typos; this also keeps int() far from Python's digit limit.
MAX_DIGITS = 12
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  #: the value: unquoted for strings, lowercased for words and keywords
    raw: str  #: exactly as written
    offset: int
    pos: Pos


class Lexer:
    """Turns rule text into a list of tokens ending with END."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def pos(self, offset: int) -> Pos:
        line = bisect_right(self._line_starts, offset)
        return Pos(line, offset - self._line_starts[line - 1] + 1)

    def error(self, message: str, offset: int, suggestion: str | None = None) -> RuleError:
        at = self.pos(offset)
        return RuleError(
            message,
            source=self.source,
            text=self.text,
            line=at.line,
            column=at.column,
            suggestion=suggestion,
        )

    def tokens(self) -> list[Token]:
        found: list[Token] = []
        offset = 0
        while offset < len(self.text):
            match = _SCANNER.match(self.text, offset)
            if match is None:
                raise self._bad_character(offset)
            kind = match.lastgroup or ""
            if kind == "STRING":
                token, offset = self._string(offset)
                found.append(token)
                continue
            raw = match.group()
            if kind == "NUMBER" and len(raw) > MAX_DIGITS:
                raise self.error(f"the number {raw} is too large", offset)
            if kind not in ("SPACE", "COMMENT"):
                value = raw.lower() if kind == "WORD" else raw
                if kind == "OP":
                    value = {"==": "=", "<>": "!="}.get(raw, raw)
                found.append(Token(kind, value, raw, offset, self.pos(offset)))
            offset = match.end()
        found.append(Token("END", "", "", len(self.text), self.pos(len(self.text))))
        return found

    def _bad_character(self, offset: int) -> RuleError:
        char = self.text[offset]
        if char.isdigit():
            word = re.match(r"[\w.-]+", self.text[offset:])
            shown = word.group() if word else char
            return self.error(
                f"{shown!r} is not a number or a date; write integers like 500 "
                "and dates like 2024-01-31",
                offset,
            )
        if char == "!":
            return self.error("'!' is not an operator; write != or not", offset)
        return self.error(f"unexpected character {char!r}; text values go in double quotes", offset)

    def _string(self, start: int) -> tuple[Token, int]:
        quote = self.text[start]
        chars: list[str] = []
        offset = start + 1
        while offset < len(self.text):
            char = self.text[offset]
            if char == quote:
                raw = self.text[start : offset + 1]
                return Token("STRING", "".join(chars), raw, start, self.pos(start)), offset + 1
            if char == "\n":
                break
            if _is_unprintable(char):
                raise self.error(
                    f"text contains the unprintable character U+{ord(char):04X}; remove it",
                    offset,
                )
            if char == "\\":
                follower = self.text[offset + 1 : offset + 2]
                if follower not in _ESCAPES:
                    raise self.error(
                        f"unknown escape '\\{follower}' in text; write \\\\ for a backslash",
                        offset,
                    )
                chars.append(_ESCAPES[follower])
                offset += 2
                continue
            chars.append(char)
            offset += 1
        raise self.error(f"text starting here has no closing {quote}", start)


def _is_unprintable(char: str) -> bool:
    """Control characters and lone surrogates, which no database column should receive."""
    code = ord(char)
    return (code < 32 and char != "\t") or code == 127 or 0xD800 <= code <= 0xDFFF
