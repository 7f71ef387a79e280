"""The columns of a contacts CSV file, how each cell is read, and the employee-data guard.

CPI's privacy policy keeps employee information (SSN, salary, date of birth, dependents …) out of
this service, so a file whose header or cells carry it is refused whole, before any row is read.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailer.contacts import states
from mailer.contacts.states import US_STATES, code_for
from mailer.enums import ContactStatus, OrganizationKind
from mailer.errors import ContactImportError, EmployeeDataError


@dataclass(frozen=True)
class Column:
    name: str
    #: The longest value the database column takes, in characters.
    max_len: int
    is_required: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("external_id", 64, is_required=True),
    Column("kind", 10, is_required=True),
    Column("organization_name", 200, is_required=True),
    Column("industry", 100),
    Column("benefit_eligible_employees", 12),
    Column("street", 200),
    Column("city", 100),
    Column("state", 2),
    Column("postal_code", 10),
    Column("country", 2),
    Column("account_manager", 64),
    Column("account_manager_name", 200),
    Column("account_manager_email", 320),
    Column("account_manager_phone", 40),
    Column("agreement_started_on", 10),
    Column("agreement_ended_on", 10),
    Column("tags", 2000),
    Column("email", 320, is_required=True),
    Column("first_name", 100),
    Column("last_name", 100),
    Column("title", 200),
    Column("is_primary", 5),
    Column("status", 10),
)
BY_NAME = {c.name: c for c in COLUMNS}
KNOWN = tuple(c.name for c in COLUMNS)
REQUIRED = tuple(c.name for c in COLUMNS if c.is_required)

#: The columns that describe the organization; rows sharing an external_id must agree on them.
ORG_COLUMNS = (
    "kind",
    "organization_name",
    "industry",
    "benefit_eligible_employees",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "account_manager",
    "agreement_started_on",
    "agreement_ended_on",
    "tags",
)
CONTACT_COLUMNS = ("first_name", "last_name", "title", "is_primary", "status")
AM_COLUMNS = ("account_manager_name", "account_manager_email", "account_manager_phone")


_TRUE = frozenset({"true", "yes", "y", "1", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "f", ""})
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ZIP = re.compile(r"\d{5}(-\d{4})?")
_COUNTRY = re.compile(r"[A-Z]{2}")
_WHOLE = re.compile(r"\d{1,9}")
_TAG_SEPARATOR = ";"
#: Control characters (PostgreSQL refuses NUL; the rest is never meant in a name or address).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def parse_kind(raw: str) -> str:
    value = raw.strip().lower()
    if value not in (OrganizationKind.CLIENT, OrganizationKind.PROSPECT):
        raise ValueError("kind must be 'client' or 'prospect'")
    return value


def parse_employees(raw: str) -> int | None:
    value = raw.strip().replace(",", "").replace("_", "")
    if not value:
        return None
    if not _WHOLE.fullmatch(value):
        raise ValueError("benefit-eligible employees must be a whole number >= 0, e.g. 120")
    return int(value)


def parse_state(raw: str) -> str:
    value = raw.strip().upper()
    if value and value not in US_STATES:
        code = code_for(raw)
        if code:
            raise ValueError(f"not a US state code: did you mean {states.describe(code)}?")
        raise ValueError("not a US state code: use the two-letter USPS code, e.g. OR, CA, DC, PR")
    return value


def parse_postal_code(raw: str) -> str:
    value = raw.strip()
    if value and not _ZIP.fullmatch(value):
        raise ValueError("not a US ZIP code: use 5 digits or ZIP+4, e.g. 97702 or 97702-1234")
    return value


def parse_country(raw: str) -> str:
    value = raw.strip().upper() or "US"
    if not _COUNTRY.fullmatch(value):
        raise ValueError("country must be a two-letter ISO 3166 code, e.g. US")
    return value


def parse_date(raw: str) -> dt.date | None:
    value = raw.strip()
    if not value:
        return None
    if not _ISO_DATE.fullmatch(value):
        raise ValueError("dates must be ISO 8601, YYYY-MM-DD, e.g. 2024-07-01")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a calendar date ({exc})") from None


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false (also yes/no, 1/0), or empty for false")


def parse_status(raw: str) -> str:
    value = raw.strip().lower() or ContactStatus.ACTIVE.value
    if value not in (ContactStatus.ACTIVE, ContactStatus.INACTIVE):
        raise ValueError("status must be 'active' or 'inactive' (empty means active)")
    return value


def parse_tags(raw: str) -> tuple[str, ...]:
    """Tags separated by ';', lowercased, sorted, without duplicates."""
    tags = {t.strip().lower() for t in raw.split(_TAG_SEPARATOR)} - {""}
    too_long = [t for t in tags if len(t) > 64]
    if too_long:
        raise ValueError(f"tag {too_long[0][:20]!r}… is longer than 64 characters")
    return tuple(sorted(tags))


def check_text(column: str, raw: str) -> str:
    """The stripped cell, or ValueError if it is too long for its column or has control chars."""
    value = raw.strip()
    limit = BY_NAME[column].max_len
    # a column with its own reader says better what is wrong than "too long" would
    if len(value) > limit and (column not in PARSERS or column == "tags"):
        raise ValueError(f"longer than {limit} characters ({len(value)})")
    if _CONTROL.search(value):
        raise ValueError("contains control characters (NUL, escape …): remove them")
    return value


#: Cell readers by column; a reader raises ValueError with the reason a cell is bad.
PARSERS: dict[str, Callable[[str], object]] = {
    "kind": parse_kind,
    "benefit_eligible_employees": parse_employees,
    "state": parse_state,
    "postal_code": parse_postal_code,
    "country": parse_country,
    "agreement_started_on": parse_date,
    "agreement_ended_on": parse_date,
    "is_primary": parse_bool,
    "status": parse_status,
    "tags": parse_tags,
}

# -- the employee-data guard ----------------------------------------------------------------------

#: Header words (compared without case, spaces, '_', '-' or '.') that name employee data.
_EMPLOYEE_SUBSTRINGS = (
    "ssn",
    "socialsecurity",
    "socsec",
    "taxpayerid",
    "salary",
    "salaries",
    "wage",
    "compensation",
    "payrate",
    "hourlyrate",
    "annualpay",
    "grosspay",
    "netpay",
    "payroll",
    "bonus",
    "dateofbirth",
    "birthdate",
    "birthday",
    "dependent",
    "dateofhire",
    "hiredate",
    "hiredon",
    "hireddate",
    "benefitelection",
    "electedbenefit",
    "coverageelection",
    "beneficiar",
    "spouse",
    "maritalstatus",
    "bankaccount",
    "routingnumber",
    "diagnos",
    "employeeid",
    "taxid",
    "employeenumber",
    "employeename",
    "medicalcondition",
)
#: Short words that count only as a whole word of the header ("dob", not "adobe").
_EMPLOYEE_WORDS = frozenset({"dob", "pin", "sin", "pay", "ssn4", "last4", "tin", "itin", "born"})
#: A US Social Security number with any separator or none: 123-45-6789, 123.45.6789,
#: 123/45/6789, 123 45 6789, 123456789 (not part of a longer number; one separator kind, so
#: ZIP+4 97702-1234 is none).
SSN_ANYWHERE = re.compile(r"(?<!\d)\d{3}(?:([-./ _])\d{2}\1|\d{2})\d{4}(?!\d)")
#: An employee-data word followed by a value: "salary: 85000", "DOB 1980-02-03",
#: "dependents: 3". The word alone ("Payroll Partners", "Salary Manager") is no data.
EMPLOYEE_VALUE = re.compile(
    r"\b(ssn|social\s*security(\s*(no|number))?|tax\s*id|taxpayer\s*id|salary|salaries|"
    r"wages?|pay\s*rate|payroll|bonus|date\s*of\s*birth|birth\s*date|d\.?o\.?b\.?|"
    r"dependents?|date\s*of\s*hire|hire\s*date)\b\W{0,3}[\d$€£]",
    re.IGNORECASE,
)
#: Columns where nine digits in a row are something else (ZIP+4 written without the dash).
_NINE_DIGITS_ALLOWED = frozenset({"postal_code"})


def employee_data_in_cell(column: str, cell: str) -> str:
    """What in `cell` looks like employee information ("" if nothing): an SSN-like number
    with any separator, or an employee-data word with a value."""
    for match in SSN_ANYWHERE.finditer(cell):
        if not (column in _NINE_DIGITS_ALLOWED and match.group().isdigit()):
            return "what looks like a Social Security number"
    found = EMPLOYEE_VALUE.search(cell)
    if found:
        return f"{found.group(1)!r} with a value"
    return ""


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def employee_data_columns(header: Sequence[str]) -> list[str]:
    """The header names that look like employee information, in file order."""
    found = []
    for name in header:
        squashed = _squash(name)
        if name.strip().lower() in KNOWN:
            continue
        if any(s in squashed for s in _EMPLOYEE_SUBSTRINGS) or _EMPLOYEE_WORDS & set(_words(name)):
            found.append(name)
    return found


def refuse_employee_data(path: str, header: Sequence[str]) -> None:
    """Raise EmployeeDataError if any header names employee information."""
    found = employee_data_columns(header)
    if found:
        names = ", ".join(repr(n) for n in found)
        raise EmployeeDataError(
            path,
            f"refused: column(s) {names} carry employee information, and this service never "
            "stores employee information (CPI privacy policy). Remove those columns and import "
            "only organization and contact columns; nothing was imported",
        )


def check_header(path: str, raw_header: Sequence[str]) -> list[str]:
    """The header's column names, lowercased; raise ContactImportError on any problem with it."""
    refuse_employee_data(path, raw_header)
    header = [h.strip().lower() for h in raw_header]
    problems = []
    duplicates = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicates:
        problems.append(f"column(s) {', '.join(map(repr, duplicates))} appear more than once")
    unknown = [h for h in header if h not in BY_NAME]
    for name in unknown:
        close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        label = repr(name) if name else "(empty header cell)"
        problems.append(f"unknown column {label}{hint}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if problems:
        known = ", ".join(KNOWN)
        raise ContactImportError(
            path, f"line 1 (header): {'; '.join(problems)}. Known columns: {known}"
        )
    return header
