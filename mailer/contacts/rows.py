"""One CSV record → a checked row; the checks that need several rows or the users table."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.access import users
from mailer.addresses import Address, normalize
from mailer.contacts import columns as cols
from mailer.enums import Role
from mailer.errors import MailerError, RowProblem
from mailer.models import User

#: A plain ASCII address (dot-atom local part, LDH labels, a letters-only TLD, no "--") that
#: email-validator accepts unchanged but for the domain's case. Checking it with a regex is ~10x
#: faster than email-validator's Unicode domain checks; everything else goes to email-validator.
#: tests/test_import.py holds the two to the same answers.
_PLAIN_ADDRESS = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
#: email-validator refuses these as special-use domains (RFC 6761) unless in test mode.
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})

#: CSV column → Organization attribute, where the names differ.
ORG_FIELD = {"organization_name": "name", "account_manager": "account_manager_id"}


@dataclass
class ParsedRow:
    line: int
    cells: list[str]
    external_id: str = ""
    #: Organization values by model attribute, for the columns the file has (tags apart).
    org: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] | None = None
    account_manager: str = ""
    #: Contact values by model attribute: email, address_hash, needs_smtputf8 and file columns.
    contact: dict[str, Any] = field(default_factory=dict)
    #: account_manager_name/_email/_phone, to create an unknown account manager.
    am_details: dict[str, str] = field(default_factory=dict)
    problems: list[RowProblem] = field(default_factory=list)

    def add_problem(self, column: str, value: str, reason: str) -> None:
        self.problems.append(RowProblem(self.line, column, value, reason))


@dataclass
class ParseCache:
    """What one file's rows share: checked organization cells, domain deliverability."""

    header: list[str]
    #: Positions of the organization (and account manager) columns in the header.
    org_positions: list[int] = field(default_factory=list)
    contact_positions: list[int] = field(default_factory=list)
    #: Organization cells → their checked values and problems (column, value, reason); every
    #: contact row repeats its organization's cells, so they are checked once.
    orgs: dict[tuple[str, ...], tuple[dict[str, Any], list[tuple[str, str, str]]]] = field(
        default_factory=dict
    )
    domains: dict[str, str | None] = field(default_factory=dict)
    check_deliverability: bool = False

    def __post_init__(self) -> None:
        org_group = {"external_id", *cols.ORG_COLUMNS, *cols.AM_COLUMNS}
        for i, column in enumerate(self.header):
            (self.org_positions if column in org_group else self.contact_positions).append(i)


def _check_cells(header: list[str], cells: list[str], positions: list[int]) -> tuple[dict, list]:
    values: dict[str, Any] = {}
    problems: list[tuple[str, str, str]] = []
    for i in positions:
        column, raw = header[i], cells[i]
        try:
            text = cols.check_text(column, raw)
            parser = cols.PARSERS.get(column)
            values[column] = parser(text) if parser else text
        except ValueError as exc:
            problems.append((column, raw, str(exc)))
    return values, problems


def _check_org_cells(cache: ParseCache, cells: list[str]) -> tuple[dict, list]:
    key = tuple(cells[i] for i in cache.org_positions)
    if key in cache.orgs:
        return cache.orgs[key]
    values, problems = _check_cells(cache.header, cells, cache.org_positions)
    started, ended = values.get("agreement_started_on"), values.get("agreement_ended_on")
    if started and ended and ended < started:
        problems.append(
            ("agreement_ended_on", str(ended), f"agreement ends before it starts ({started})")
        )
    cache.orgs[key] = values, problems
    return values, problems


def parse_row(
    line: int, cells: list[str], hash_address: Callable[[str], str], cache: ParseCache
) -> ParsedRow:
    """Check every cell of one record; problems are collected on the row, never raised."""
    row = ParsedRow(line, cells)
    header = cache.header
    if len(cells) != len(header):
        row.add_problem(
            "", ",".join(cells)[:80], f"has {len(cells)} cells, the header has {len(header)}"
        )
        return row
    org_values, org_problems = _check_org_cells(cache, cells)
    values, problems = _check_cells(header, cells, cache.contact_positions)
    values.update(org_values)
    for problem in [*org_problems, *problems]:
        row.add_problem(*problem)
    for column in cols.REQUIRED:
        if values.get(column) == "":
            row.add_problem(column, "", f"{column} is required")
    row.external_id = values.get("external_id", "")
    row.account_manager = values.get("account_manager", "")
    row.tags = values.get("tags")
    row.org = {
        ORG_FIELD.get(c, c): values[c] for c in cols.ORG_COLUMNS if c in values and c != "tags"
    }
    row.contact = {c: values[c] for c in cols.CONTACT_COLUMNS if c in values}
    row.am_details = {c: values.get(c, "") for c in cols.AM_COLUMNS}
    if values.get("email"):
        _parse_email(row, values["email"], hash_address, cache)
    return row


def _parse_email(
    row: ParsedRow, raw: str, hash_address: Callable[[str], str], cache: ParseCache
) -> None:
    try:
        address = fast_normalize(raw) or normalize(raw)
    except ValueError as exc:
        row.add_problem("email", raw, f"not a valid email address: {exc}")
        return
    domains = cache.domains
    if cache.check_deliverability:
        domain = address.normalized.rpartition("@")[2]
        if domain not in domains:
            try:
                normalize(address.normalized, check_deliverability=True)
                domains[domain] = None
            except ValueError as exc:
                domains[domain] = str(exc)
        if domains[domain]:
            row.add_problem("email", raw, f"undeliverable: {domains[domain]}")
            return
    row.contact.update(
        email=address.normalized,
        address_hash=hash_address(address.normalized),
        needs_smtputf8=address.needs_smtputf8,
    )


def fast_normalize(raw: str) -> Address | None:
    """email-validator's answer for a plain ASCII address, or None to ask email-validator."""
    match = _PLAIN_ADDRESS.fullmatch(raw.strip())
    if match is None:
        return None
    local, domain = match["local"], match["domain"].lower()
    if (
        len(local) > 64
        or len(domain) > 253
        or len(local) + 1 + len(domain) > 254
        or "--" in domain
        or domain.rpartition(".")[2] in _SPECIAL_USE_TLDS
    ):
        return None
    return Address(f"{local}@{domain}", False)


def check_across_rows(rows: list[ParsedRow]) -> None:
    """Duplicate emails, organizations described two ways, two primary contacts of one org."""
    first_by_email: dict[str, ParsedRow] = {}
    first_by_org: dict[str, ParsedRow] = {}
    primary_by_org: dict[str, int] = {}
    for row in rows:
        if row.problems:
            continue
        key = row.contact["address_hash"]
        if key in first_by_email:
            row.add_problem(
                "email",
                row.contact["email"],
                f"duplicate email: row {first_by_email[key].line} has the same address",
            )
            continue
        first = first_by_org.setdefault(row.external_id, row)
        if first is not row:
            _compare_org(first, row)
            if row.problems:
                continue
        if row.contact.get("is_primary"):
            if row.external_id in primary_by_org:
                row.add_problem(
                    "is_primary",
                    "true",
                    f"organization {row.external_id} already has a primary contact on row "
                    f"{primary_by_org[row.external_id]}; mark only one",
                )
                continue
            primary_by_org[row.external_id] = row.line
        first_by_email[key] = row


def _compare_org(first: ParsedRow, row: ParsedRow) -> None:
    pairs = [
        (c, first.org.get(ORG_FIELD.get(c, c)), row.org.get(ORG_FIELD.get(c, c)))
        for c in cols.ORG_COLUMNS
        if c not in ("tags", "account_manager")
    ]
    pairs.append(("tags", ";".join(first.tags or ()), ";".join(row.tags or ())))
    pairs.append(("account_manager", first.account_manager, row.account_manager))
    for column, expected, got in pairs:
        if expected != got:
            row.add_problem(
                column,
                "" if got is None else str(got),
                f"organization {row.external_id} has {expected!r} here on row {first.line}; "
                "all rows of one organization must agree",
            )


def resolve_account_managers(session: Session, rows: list[ParsedRow], actor: str) -> list[str]:
    """Put account manager ids on the rows; create users named with name/email columns.

    Returns the usernames created. An unknown username without those columns is a row problem.
    """
    wanted = {r.account_manager for r in rows if r.account_manager and not r.problems}
    if not wanted:
        for row in rows:
            if "account_manager_id" in row.org:
                row.org["account_manager_id"] = None
        return []
    known = {
        u.username: (u.id, u.role)
        for u in session.execute(
            select(User.username, User.id, User.role).where(User.username.in_(sorted(wanted)))
        )
    }
    created: list[str] = []
    for row in rows:
        if "account_manager_id" not in row.org or row.problems:
            continue
        username = row.account_manager
        if not username:
            row.org["account_manager_id"] = None
            continue
        if username not in known:
            _create_account_manager(session, row, actor, known, created)
        if username in known:
            user_id, role = known[username]
            if role != Role.ACCOUNT_MANAGER:
                row.add_problem(
                    "account_manager",
                    username,
                    f"user {username!r} has role {role}, not account_manager",
                )
            row.org["account_manager_id"] = user_id
    return created


def _create_account_manager(
    session: Session, row: ParsedRow, actor: str, known: dict[str, Any], created: list[str]
) -> None:
    username = row.account_manager
    details = row.am_details
    if not (details["account_manager_name"] and details["account_manager_email"]):
        row.add_problem(
            "account_manager",
            username,
            f"no user {username!r}: create it with `mailer users create {username} --role "
            "account_manager --name NAME --email EMAIL`, or add account_manager_name and "
            "account_manager_email columns so the import creates it",
        )
        return
    try:
        user = users.add_user(
            session,
            username=username,
            display_name=details["account_manager_name"],
            email=details["account_manager_email"],
            phone=details["account_manager_phone"],
            role=Role.ACCOUNT_MANAGER.value,
            audited_as=actor,
        )
    except MailerError as exc:
        row.add_problem("account_manager", username, str(exc))
        return
    known[username] = (user.id, user.role)
    created.append(username)
