"""Deterministic, realistic fake clients and prospects with contacts, as CSV or into the DB.

Everything comes from `random.Random` seeded per organization, so the same seed gives the same
bytes, and organization n is the same whatever the total. Addresses are only at reserved
`.example` domains; no real person or company is named.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from mailer.access import users
from mailer.access.actor import Actor, audit, require
from mailer.consent import opt_out
from mailer.contacts import sample_words as words
from mailer.contacts.store import allocate_ids, insert_tuples
from mailer.csvfiles import dict_writer
from mailer.enums import ALL_MARKETING, OptOutSource
from mailer.errors import MailerError
from mailer.models import Contact, Organization, OrganizationTag, User
from mailer.runtime import Runtime

#: The columns of a sample CSV file (all accepted by `mailer import`).
SAMPLE_COLUMNS = (
    "external_id", "kind", "organization_name", "industry", "benefit_eligible_employees",
    "street", "city", "state", "postal_code", "country", "account_manager",
    "account_manager_name", "account_manager_email", "account_manager_phone",
    "agreement_started_on", "agreement_ended_on", "tags",
    "email", "first_name", "last_name", "title", "is_primary", "status",
)  # fmt: skip

#: Share of contacts with a non-ASCII name / with a non-ASCII local part (needs SMTPUTF8).
NON_ASCII_NAME_SHARE = 0.04
SMTPUTF8_SHARE = 0.004
#: Organizations written per round trip by load_sample_into_db.
LOAD_CHUNK = 5000


@dataclass
class SampleContact:
    email: str
    first_name: str
    last_name: str
    title: str
    is_primary: bool
    status: str
    needs_smtputf8: bool


@dataclass
class SampleOrganization:
    external_id: str
    kind: str
    name: str
    industry: str
    benefit_eligible_employees: int
    street: str
    city: str
    state: str
    postal_code: str
    account_manager: str
    agreement_started_on: dt.date | None
    agreement_ended_on: dt.date | None
    tags: tuple[str, ...]
    contacts: list[SampleContact] = field(default_factory=list)


def external_id(seed: int, n: int) -> str:
    return f"S{seed}-{n:07d}"


def _employees(rng: random.Random) -> int:
    # log-normal: most employers are small, a few are very large (median ~60, 95th pct ~1,200)
    return max(5, min(20_000, round(math.exp(rng.gauss(math.log(60), 1.8)))))


def _agreement(rng: random.Random, kind: str, today: dt.date) -> tuple[dt.date | None, ...]:
    if kind == "prospect":
        return None, None
    started = today - dt.timedelta(days=rng.randint(120, 3650))
    roll = rng.random()
    if roll < 0.78:
        return started, None
    if roll < 0.88:  # ended within the last 90 days: still in the policy audience
        return started, today - dt.timedelta(days=rng.randint(1, 89))
    ended = today - dt.timedelta(days=rng.randint(120, 2000))
    return min(started, ended - dt.timedelta(days=365)), ended


def _ascii(text: str) -> str:
    text = text.translate(words.NON_DECOMPOSING)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in ".-"))


def _person(rng: random.Random) -> tuple[str, str]:
    if rng.random() < NON_ASCII_NAME_SHARE:
        return rng.choice(words.FIRST_NAMES_INTL), rng.choice(words.LAST_NAMES_INTL)
    return rng.choice(words.FIRST_NAMES), rng.choice(words.LAST_NAMES)


def _contacts(rng: random.Random, domain: str, low: int, high: int) -> list[SampleContact]:
    count = min(high, max(low, rng.choices((1, 2, 3, 4, 5), (30, 30, 20, 12, 8))[0]))
    titles = rng.sample(words.TITLES, k=min(count, len(words.TITLES)))
    contacts, used = [], set()
    for i in range(count):
        first, last = _person(rng)
        is_utf8 = rng.random() < SMTPUTF8_SHARE and not (first + last).isascii()
        local = f"{first}.{last}".lower().replace(" ", "") if is_utf8 else None
        local = local or f"{_ascii(first)}.{_ascii(last)}".lower()
        local = unicodedata.normalize("NFC", local)
        while local in used:
            local += str(rng.randint(0, 9))
        used.add(local)
        status = "inactive" if rng.random() < 0.03 else "active"
        title = titles[i % len(titles)]
        contacts.append(
            SampleContact(f"{local}@{domain}", first, last, title, i == 0, status, is_utf8)
        )
    return contacts


def generate_organizations(
    organizations: int,
    seed: int,
    *,
    contacts_per_org: tuple[int, int] = (1, 5),
    today: dt.date | None = None,
) -> Iterator[SampleOrganization]:
    """`organizations` fake organizations with their contacts, the same for the same arguments."""
    today = today or dt.date.today()
    for n in range(1, organizations + 1):
        yield sample_organization(n, seed, contacts_per_org=contacts_per_org, today=today)


def sample_contact(
    address: str, seed: int, *, contacts_per_org: tuple[int, int] = (1, 5)
) -> SampleContact | None:
    """The contact of the sample with `seed` whose address this is, or None: the benchmarks
    find what a message to `address` must say from the generator, not from the database."""
    domain = address.rpartition("@")[2]
    found = _SAMPLE_DOMAIN.search(domain)
    if found is None or int(found[2]) != seed:
        return None
    org = sample_organization(
        int(found[1]), seed, contacts_per_org=contacts_per_org, today=dt.date.today()
    )
    return next((c for c in org.contacts if c.email.lower() == address.lower()), None)


#: A sample contact's domain ends in `-<organization number>.s<seed>.example`.
_SAMPLE_DOMAIN = re.compile(r"-(\d+)\.s(\d+)\.example$")


def sample_organization(
    n: int, seed: int, *, contacts_per_org: tuple[int, int] = (1, 5), today: dt.date
) -> SampleOrganization:
    """Organization `n` (from 1) of the sample with `seed`, whatever the total. Only its
    agreement dates depend on `today`."""
    low, high = contacts_per_org
    rng = random.Random(f"mailer-sample:{seed}:{n}")
    industry, nouns = rng.choice(words.INDUSTRIES)
    name = f"{rng.choice(words.NAME_STEMS)} {rng.choice(nouns)}{rng.choice(words.SUFFIXES)}"
    city, state, zip3 = rng.choice(words.CITIES)
    kind = "client" if rng.random() < 0.7 else "prospect"
    started, ended = _agreement(rng, kind, today)
    employees = _employees(rng)
    tags = {rng.choice(words.TAGS) for _ in range(rng.randint(0, 3))}
    if employees >= 1000:
        tags.add("enterprise")
    elif employees < 50:
        tags.add("small-business")
    am = rng.choice(words.ACCOUNT_MANAGERS)[0] if kind == "client" or rng.random() < 0.5 else ""
    slug = "-".join(_ascii(w).lower() for w in name.split()[:2])
    org = SampleOrganization(
        external_id=external_id(seed, n),
        kind=kind,
        name=name,
        industry=industry,
        benefit_eligible_employees=employees,
        street=f"{rng.randint(10, 9999)} {rng.choice(words.STREETS)}",
        city=city,
        state=state,
        postal_code=f"{zip3}{rng.randint(1, 99):02d}",
        account_manager=am,
        agreement_started_on=started,
        agreement_ended_on=ended,
        tags=tuple(sorted(tags)),
    )
    org.contacts = _contacts(rng, f"{slug}-{n}.s{seed}.example", low, high)
    return org


def generate_sample(
    organizations: int,
    seed: int,
    *,
    contacts_per_org: tuple[int, int] = (1, 5),
    today: dt.date | None = None,
) -> Iterator[dict[str, str]]:
    """One CSV row dict (SAMPLE_COLUMNS) per contact, as `mailer import` reads them."""
    managers = {a[0]: a for a in words.ACCOUNT_MANAGERS}
    for org in generate_organizations(
        organizations, seed, contacts_per_org=contacts_per_org, today=today
    ):
        am = managers.get(org.account_manager, ("", "", "", ""))
        org_cells = {
            "external_id": org.external_id,
            "kind": org.kind,
            "organization_name": org.name,
            "industry": org.industry,
            "benefit_eligible_employees": str(org.benefit_eligible_employees),
            "street": org.street,
            "city": org.city,
            "state": org.state,
            "postal_code": org.postal_code,
            "country": "US",
            "account_manager": am[0],
            "account_manager_name": am[1],
            "account_manager_email": am[2],
            "account_manager_phone": am[3],
            "agreement_started_on": _iso(org.agreement_started_on),
            "agreement_ended_on": _iso(org.agreement_ended_on),
            "tags": ";".join(org.tags),
        }
        for c in org.contacts:
            yield {
                **org_cells,
                "email": c.email,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "title": c.title,
                "is_primary": "true" if c.is_primary else "false",
                "status": c.status,
            }


def _iso(day: dt.date | None) -> str:
    return day.isoformat() if day else ""


def write_sample_csv(
    path: str | Path,
    organizations: int,
    seed: int,
    *,
    contacts_per_org: tuple[int, int] = (1, 5),
    today: dt.date | None = None,
) -> dict[str, int]:
    """Write a CSV file `mailer import` accepts; returns the organization and contact counts."""
    contacts = 0
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        writer = dict_writer(out, SAMPLE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in generate_sample(
            organizations, seed, contacts_per_org=contacts_per_org, today=today
        ):
            writer.writerow(row)
            contacts += 1
    return {"organizations": organizations, "contacts": contacts}


def load_sample_into_db(
    rt: Runtime,
    organizations: int,
    seed: int,
    actor: Actor,
    *,
    contacts_per_org: tuple[int, int] = (1, 5),
    today: dt.date | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write sample organizations, contacts, tags and account managers in one transaction.

    Bulk Core inserts (COPY on PostgreSQL); refuses a seed already loaded. Returns counts and
    the seconds taken. `progress(done, total)` is called per chunk of organizations.
    """
    with rt.sessions() as session:
        require(
            session,
            actor,
            "sample_data.load",
            object_type="sample",
            object_id=seed,
            reason="only an admin may load sample data into the database",
        )
    started = time.perf_counter()
    counts: dict[str, Any] = {"organizations": 0, "contacts": 0, "tags": 0}
    with rt.sessions.begin() as session:
        counts["users_created"] = _ensure_account_managers(session, actor.username)
        conn = session.connection()
        first = external_id(seed, 1)
        if conn.execute(select(Organization.id).where(Organization.external_id == first)).first():
            raise MailerError(
                f"sample data for seed {seed} is already in the database (organization {first}); "
                "use another --seed or a fresh database"
            )
        manager_ids = dict(conn.execute(select(User.username, User.id)).tuples().all())
        now = dt.datetime.now(dt.UTC)
        batch: list[SampleOrganization] = []
        orgs = generate_organizations(
            organizations, seed, contacts_per_org=contacts_per_org, today=today
        )
        for org in orgs:
            batch.append(org)
            if len(batch) == LOAD_CHUNK:
                _load_batch(conn, batch, manager_ids, rt.hash_address, now, counts)
                batch = []
                if progress:
                    progress(counts["organizations"], organizations)
        _load_batch(conn, batch, manager_ids, rt.hash_address, now, counts)
        if conn.dialect.name == "postgresql":
            # fresh statistics, so the planner stops treating the grown tables as empty
            conn.exec_driver_sql("ANALYZE organizations, organization_tags, contacts")
        counts["seconds"] = round(time.perf_counter() - started, 3)
        details = {k: v for k, v in counts.items() if k != "seconds"}
        audit(session, actor, "sample_data.load", object_type="sample", object_id=seed, **details)
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return counts


def _ensure_account_managers(session: Any, actor: str) -> int:
    existing = set(session.scalars(select(User.username)))
    created = 0
    for username, name, email, phone in words.ACCOUNT_MANAGERS:
        if username not in existing:
            users.add_user(
                session,
                username=username,
                display_name=name,
                email=email,
                phone=phone,
                role="account_manager",
                audited_as=actor,
            )
            created += 1
    return created


def _load_batch(
    conn: Connection,
    batch: list[SampleOrganization],
    manager_ids: dict[str, int],
    hash_address: Callable[[str], str],
    now: dt.datetime,
    counts: dict[str, Any],
) -> None:
    if not batch:
        return
    org_ids = allocate_ids(conn, Organization.__table__, len(batch))
    org_rows = [
        (org_id, o.external_id, o.kind, o.name, o.industry, o.benefit_eligible_employees,
         o.street, o.city, o.state, o.postal_code, "US", manager_ids.get(o.account_manager),
         o.agreement_started_on, o.agreement_ended_on, now, now, now)
        for org_id, o in zip(org_ids, batch, strict=True)
    ]  # fmt: skip
    insert_tuples(conn, Organization.__table__, _ORG_COLUMNS, org_rows)
    contact_rows = [
        (org_id, c.email, hash_address(c.email), c.needs_smtputf8, c.first_name, c.last_name,
         c.title, c.is_primary, c.status, now, now, now)
        for org_id, o in zip(org_ids, batch, strict=True)
        for c in o.contacts
    ]  # fmt: skip
    tag_rows = [(org_id, t) for org_id, o in zip(org_ids, batch, strict=True) for t in o.tags]
    insert_tuples(conn, Contact.__table__, _CONTACT_COLUMNS, contact_rows)
    insert_tuples(conn, OrganizationTag.__table__, ("organization_id", "tag"), tag_rows)
    counts["organizations"] += len(batch)
    counts["contacts"] += len(contact_rows)
    counts["tags"] += len(tag_rows)


_ORG_COLUMNS = (
    "id", "external_id", "kind", "name", "industry", "benefit_eligible_employees", "street",
    "city", "state", "postal_code", "country", "account_manager_id", "agreement_started_on",
    "agreement_ended_on", "created_at", "updated_at", "last_activity_at",
)  # fmt: skip
_CONTACT_COLUMNS = (
    "organization_id", "email", "address_hash", "needs_smtputf8", "first_name", "last_name",
    "title", "is_primary", "status", "created_at", "updated_at", "last_activity_at",
)  # fmt: skip


def busiest_account_manager(rt: Runtime) -> str | None:
    """The username of the account manager with the most clients (None when nobody has any)."""
    with rt.sessions() as session:
        return session.scalar(
            select(User.username)
            .join(Organization, Organization.account_manager_id == User.id)
            .where(Organization.kind == "client")
            .group_by(User.username)
            .order_by(func.count(Organization.id).desc(), User.username)
            .limit(1)
        )


def opt_out_some(rt: Runtime, actor: str, *, every: int = 8, among: int = 40) -> int:
    """Opt every `every`-th of the first `among` contacts out of all marketing, as if through
    the preference page, so a demo shows the guard at work. Returns how many."""
    with rt.sessions.begin() as session:
        ids = list(session.scalars(select(Contact.id).order_by(Contact.id).limit(among)))
        for contact_id in ids[::every]:
            opt_out(
                session,
                contact_id=contact_id,
                scope=ALL_MARKETING,
                source=OptOutSource.PREFERENCES,
                ip="127.0.0.1",
                user_agent="mailer demo",
                actor=actor,
            )
    return len(ids[::every])
