"""Content rules by category (docs/standards.md §3), checked when a template is loaded.

- policy: a notice of a change in terms may go to people who opted out of marketing only if it
  carries no promotional content at all, subject included.
- features: a feature explanation counts as transactional only if no promotion leads it, so the
  opening of the message may not carry pricing or an upgrade call to action.
A word list is a blunt tool; it catches the obvious slip, and counsel still reviews the rest.
"""

from __future__ import annotations

import re

from mailer.enums import Category
from mailer.errors import TemplateError

_PROMOTIONAL = re.compile(
    r"\b(upgrade|pricing|prices?|discounts?|\d+\s*% off|buy now|special offer|limited[- ]time"
    r"|free trial|sign up|save \$|coupon|promo(tion)? code|act now)\b",
    re.IGNORECASE,
)
_TAGS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|<[^>]*>", re.S)
#: How much of a feature explanation counts as its opening ("above the fold"), in characters.
FEATURE_OPENING_CHARS = 600


def lint_content(category: Category, file: str, subject: str, sources: list[str]) -> None:
    """Raise TemplateError naming the line of the first promotional phrase where none may be."""
    if category is Category.POLICY:
        for text, what in [(subject, "subject"), *((s, "body") for s in sources)]:
            _refuse(file, text, what, "a policy notice must carry no promotional content")
    elif category is Category.FEATURES:
        for text in sources:
            opening = _opening(text, FEATURE_OPENING_CHARS)
            _refuse(
                file,
                opening,
                "opening",
                "a feature explanation may not lead with a promotion "
                "(make it a promotions template, or move this further down)",
            )


def _refuse(file: str, text: str, what: str, why: str) -> None:
    plain = _TAGS.sub(lambda m: "\n" * m.group().count("\n"), text)
    m = _PROMOTIONAL.search(plain)
    if m:
        line = plain.count("\n", 0, m.start()) + 1
        raise TemplateError(
            file, f"{m.group()!r} in the {what}: {why}", line if what != "subject" else None
        )


def _opening(text: str, chars: int) -> str:
    """`text` up to its `chars`-th visible (non-space, non-markup) character."""
    masked = _TAGS.sub(lambda t: " " * len(t.group()), text)
    for count, m in enumerate(re.finditer(r"\S", masked), start=1):
        if count > chars:
            return text[: m.start()]
    return text
