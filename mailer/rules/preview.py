"""Previews of an audience: how many are eligible, how many each guard excludes, a sample."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, audit, require
from mailer.config import Settings
from mailer.enums import Category, Role
from mailer.rules.compiler import audience_count, audience_select
from mailer.rules.guards import contacts, organizations
from mailer.rules.nodes import Rule

#: The fewest contact ids the first range of a sample covers; each next range is 4× wider.
SAMPLE_MIN_IDS = 1000


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    organization: str


@dataclass(frozen=True)
class Preview:
    category: Category
    rule_text: str
    eligible: int
    #: SkipReason value -> contacts the rule matched that this guard excluded.
    excluded: dict[str, int]
    sample: list[Recipient] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.eligible + sum(self.excluded.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category.value,
            "rule": self.rule_text,
            "matched": self.matched,
            "eligible": self.eligible,
            "excluded": dict(sorted(self.excluded.items())),
            "sample": [vars(r) for r in self.sample],
        }


def count_by_reason(session: Session, sel: Select[Any]) -> dict[str | None, int]:
    """Contacts of an audience select per skip reason (None: eligible)."""
    sub = sel.subquery()
    rows = session.execute(select(sub.c.skip_reason, func.count()).group_by(sub.c.skip_reason))
    return {reason: count for reason, count in rows}


def _sample(session: Session, sel: Select[Any], eligible: int, size: int) -> list[Recipient]:
    """The first `size` eligible recipients of an audience select, by contact id.

    Looked for in growing ranges of contact ids rather than by sorting the audience: the
    planner cannot tell how many contacts pass the guards, so over a million contacts it
    worked out and sorted all of them to return ten (1–2 s; docs/performance.md §5).
    """
    low, high = session.execute(select(func.min(contacts.c.id), func.max(contacts.c.id))).one()
    if low is None:
        return []
    # the eligible are spread over the ids: expect `size` of them within this many
    span = max(SAMPLE_MIN_IDS, (high - low + 1) * size * 2 // eligible)
    after = low - 1
    sample: list[Recipient] = []
    while len(sample) < size and after < high:
        window = sel.where(contacts.c.id > after, contacts.c.id <= after + span).subquery()
        query = (
            select(
                window.c.email, contacts.c.first_name, contacts.c.last_name, organizations.c.name
            )
            .join(contacts, contacts.c.id == window.c.contact_id)
            .join(organizations, organizations.c.id == window.c.organization_id)
            .where(window.c.skip_reason.is_(None))
            .order_by(window.c.contact_id)
            .limit(size - len(sample))
        )
        for email, first, last, org in session.execute(query):
            sample.append(Recipient(email, f"{first} {last}".strip(), org))
        after += span
        span *= 4
    return sample


def preview(
    session: Session,
    rule: Rule | None,
    category: Category | str,
    *,
    today: dt.date,
    now: dt.datetime,
    account_manager_id: int | None = None,
    policy_grace_days: int | None = None,
    sample_size: int = 10,
    only_clients_of: int | None = None,
) -> Preview:
    """Count an audience by skip reason and fetch the first `sample_size` eligible recipients.

    `only_clients_of` (a user id) leaves out, uncounted, every contact whose organization that
    account manager does not manage: what they may see, whatever the category.
    """
    category = Category(category)
    counting, reasons = audience_count(
        rule,
        category,
        today=today,
        now=now,
        account_manager_id=account_manager_id,
        policy_grace_days=policy_grace_days,
    )
    sel = audience_select(
        rule,
        category,
        today=today,
        now=now,
        account_manager_id=account_manager_id,
        policy_grace_days=policy_grace_days,
    )
    if only_clients_of is not None:
        own = organizations.c.account_manager_id == only_clients_of
        counting, sel = counting.where(own), sel.where(own)
    matched, *skipped = session.execute(counting).one()
    eligible = matched - sum(skipped)
    sample = _sample(session, sel, eligible, sample_size) if sample_size > 0 and eligible else []
    excluded = {reason.value: n for reason, n in zip(reasons, skipped, strict=True) if n}
    return Preview(category, rule.text if rule else "", eligible, excluded, sample)


def preview_audience(
    session: Session,
    actor: Actor,
    rule: Rule | None,
    category: Category | str,
    *,
    settings: Settings,
    label: str = "",
    sample_size: int = 10,
    now: dt.datetime | None = None,
) -> Preview:
    """A preview as `actor` may see it: an account manager sees only their own clients (in any
    category), exactly the contacts their service mail would reach.

    A preview that shows contacts (`sample_size` > 0) is audited; a count alone is not, so a
    live count in an editor does not flood the audit log.
    """
    category = Category(category)
    require(session, actor, "audience.preview", object_type="audience", object_id=label or None)
    now = now or dt.datetime.now(dt.UTC)
    manager_id = actor.user_id if actor.role is Role.ACCOUNT_MANAGER else None
    if actor.role is Role.ACCOUNT_MANAGER and manager_id is None:
        manager_id = -1  # an account manager without a user row manages nobody
    result = preview(
        session,
        rule,
        category,
        today=now.date(),
        now=now,
        account_manager_id=manager_id if category is Category.SERVICE else None,
        policy_grace_days=settings.policy_grace_days,
        sample_size=sample_size,
        only_clients_of=manager_id,
    )
    if result.sample:
        audit(
            session,
            actor,
            "audience.preview",
            object_type="audience",
            object_id=label,
            category=category.value,
            rule=result.rule_text,
            eligible=result.eligible,
            excluded=result.excluded,
            sample_size=len(result.sample),
        )
    return result


def count_audience(
    session: Session,
    actor: Actor,
    rule: Rule | None,
    category: Category | str,
    *,
    settings: Settings,
    now: dt.datetime | None = None,
) -> Preview:
    """Counts only (no contacts), as `actor` may see them; not audited."""
    return preview_audience(
        session, actor, rule, category, settings=settings, sample_size=0, now=now
    )
