"""The fields an audience rule may name: their types, allowed values and operators.

Text comparisons (`=`, `in`, `contains`, `starts with`) ignore case on every text field
(industry, state, city, postal_code, country, tag, account_manager, contact.title): marketing
types `"Healthcare"` or `"or"` and means the same rows. SQLite folds only ASCII letters; PostgreSQL
folds all of Unicode.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mailer.contacts import states
from mailer.enums import OrganizationKind


class FieldType(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    ENUM = "choice"
    BOOL = "true/false"


#: Operators each type accepts, as the parser names them.
OPERATORS: dict[FieldType, frozenset[str]] = {
    FieldType.TEXT: frozenset({"=", "!=", "in", "contains", "starts with", "is empty"}),
    FieldType.NUMBER: frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "between", "is empty"}),
    FieldType.DATE: frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "between", "is empty"}),
    FieldType.ENUM: frozenset({"=", "!=", "in"}),
    FieldType.BOOL: frozenset({"=", "!="}),
}

#: Operators in the order error messages list them.
OPERATOR_ORDER = (
    *("=", "!=", "<", "<=", ">", ">=", "in", "between"),
    *("contains", "starts with", "is empty"),
)

#: How the words `true` and `false` may be written.
BOOL_WORDS = {"true": True, "yes": True, "false": False, "no": False}


@dataclass(frozen=True)
class Field:
    """One field of the rule language.

    `column` names the table column ("organizations.industry"); tag, account_manager and
    agreement are computed by the compiler from other tables.
    """

    name: str
    type: FieldType
    column: str
    description: str
    choices: tuple[str, ...] = ()
    #: Other words for a choice that a reader may type (`customer` for `client`).
    synonyms: tuple[tuple[str, str], ...] = ()
    #: A text field that holds codes: given a written value, the code it should be (or None),
    #: so `state = "Oregon"` is an error naming OR instead of an audience of nobody.
    code_for: Callable[[str], str | None] | None = None
    #: The codes such a field holds (upper case).
    codes: frozenset[str] = frozenset()

    def suggest_choice(self, word: str) -> str | None:
        by_synonym = dict(self.synonyms).get(word.lower())
        if by_synonym:
            return by_synonym
        close = difflib.get_close_matches(word.lower(), self.choices, n=1, cutoff=0.5)
        return close[0] if close else None


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field(
            "kind",
            FieldType.ENUM,
            "organizations.kind",
            "client or prospect",
            choices=tuple(OrganizationKind),
            synonyms=(("customer", "client"), ("customers", "client"), ("lead", "prospect")),
        ),
        Field("industry", FieldType.TEXT, "organizations.industry", "type of industry"),
        Field(
            "employees",
            FieldType.NUMBER,
            "organizations.benefit_eligible_employees",
            "number of benefit-eligible employees",
        ),
        Field(
            "state",
            FieldType.TEXT,
            "organizations.state",
            "two-letter state code",
            code_for=states.code_for,
            codes=states.US_STATES,
        ),
        Field("city", FieldType.TEXT, "organizations.city", "city"),
        Field("postal_code", FieldType.TEXT, "organizations.postal_code", "ZIP code"),
        Field("country", FieldType.TEXT, "organizations.country", "two-letter country code"),
        Field("tag", FieldType.TEXT, "organization_tags.tag", "any tag of the organization"),
        Field(
            "account_manager",
            FieldType.TEXT,
            "users.username",
            "username of the organization's account manager",
        ),
        Field(
            "client_since",
            FieldType.DATE,
            "organizations.agreement_started_on",
            "the day the agreement started",
        ),
        Field(
            "agreement",
            FieldType.ENUM,
            "organizations.agreement_started_on",
            "active or ended, as of today",
            choices=("active", "ended"),
            synonyms=(("current", "active"), ("terminated", "ended"), ("expired", "ended")),
        ),
        Field(
            "agreement_ended",
            FieldType.DATE,
            "organizations.agreement_ended_on",
            "the day the agreement ended",
        ),
        Field("contact.title", FieldType.TEXT, "contacts.title", "the contact's job title"),
        Field(
            "contact.primary",
            FieldType.BOOL,
            "contacts.is_primary",
            "whether the contact is the organization's primary contact",
            choices=("true", "false"),
        ),
    )
}

#: Other spellings readers use for a field.
ALIASES = {
    "employee_count": "employees",
    "zip": "postal_code",
    "zip_code": "postal_code",
    "tags": "tag",
    "manager": "account_manager",
    "title": "contact.title",
    "primary": "contact.primary",
}


def suggest_field(name: str) -> str | None:
    """The field a misspelled name most likely meant."""
    if name in ALIASES:
        return ALIASES[name]
    close = difflib.get_close_matches(name, [*FIELDS, *ALIASES], n=1, cutoff=0.6)
    if not close:
        return None
    return ALIASES.get(close[0], close[0])
