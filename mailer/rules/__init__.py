"""Audience rules: a small, safe language that picks contacts, compiled to one SQL select.

rule = parse_rule('kind = prospect and state in ("OR", "WA")')
sel = audience_select(rule, Category.PROMOTIONS, today=today, now=now)
"""

from mailer.rules.audiences import Audience, get_audience, load_audience, load_audiences
from mailer.rules.compiler import audience_select
from mailer.rules.nodes import Rule
from mailer.rules.parser import parse_rule
from mailer.rules.preview import (
    Preview,
    count_audience,
    count_by_reason,
    preview,
    preview_audience,
)

__all__ = [
    "Audience",
    "Preview",
    "Rule",
    "audience_select",
    "count_audience",
    "count_by_reason",
    "get_audience",
    "load_audience",
    "load_audiences",
    "parse_rule",
    "preview",
    "preview_audience",
]
