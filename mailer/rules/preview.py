"""Previews of an audience: how many are eligible, how many each guard excludes, a sample."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from mailer.audit import record
from mailer.enums import Category, Role
from mailer.rules.compiler import audience_select
from mailer.rules.guards import contacts, organizations
from mailer.rules.nodes import Rule
from mailer.runtime import Runtime
from mailer.users import get_user


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


def preview(
    session: Session,
    rule: Rule | None,
    category: Category | str,
    *,
    today: dt.date,
    now: dt.datetime,
    account_manager_id: int | None = None,
    policy_grace_days: int = 90,
    sample_size: int = 10,
) -> Preview:
    """Count an audience by skip reason and fetch the first `sample_size` eligible recipients."""
    category = Category(category)
    sel = audience_select(
        rule,
        category,
        today=today,
        now=now,
        account_manager_id=account_manager_id,
        policy_grace_days=policy_grace_days,
    )
    counts = count_by_reason(session, sel)
    eligible = counts.pop(None, 0)
    sample: list[Recipient] = []
    if sample_size > 0 and eligible:
        sub = sel.subquery()
        query = (
            select(sub.c.email, contacts.c.first_name, contacts.c.last_name, organizations.c.name)
            .join(contacts, contacts.c.id == sub.c.contact_id)
            .join(organizations, organizations.c.id == sub.c.organization_id)
            .where(sub.c.skip_reason.is_(None))
            .order_by(sub.c.contact_id)
            .limit(sample_size)
        )
        for email, first, last, org in session.execute(query):
            sample.append(Recipient(email, f"{first} {last}".strip(), org))
    excluded = {str(reason): count for reason, count in counts.items()}
    return Preview(category, rule.text if rule else "", eligible, excluded, sample)


def preview_audience(
    rt: Runtime,
    label: str,
    rule: Rule | None,
    category: Category | str,
    *,
    actor: str,
    as_username: str | None = None,
    sample_size: int = 10,
    now: dt.datetime | None = None,
) -> Preview:
    """`preview` as `as_username` would launch it (an account manager's service mail reaches
    only their clients), recorded in the audit log since the sample shows contact details."""
    category = Category(category)
    now = now or dt.datetime.now(dt.UTC)
    with rt.sessions.begin() as session:
        manager_id = None
        if as_username is not None:
            user = get_user(session, as_username)
            # the same limit campaign planning applies to what this user launches
            manager_id = user.id if user.role == Role.ACCOUNT_MANAGER else None
        result = preview(
            session,
            rule,
            category,
            today=now.date(),
            now=now,
            account_manager_id=manager_id if category is Category.SERVICE else None,
            policy_grace_days=rt.settings.policy_grace_days,
            sample_size=sample_size,
        )
        record(
            session,
            actor,
            "audience.preview",
            object_type="audience",
            object_id=label,
            category=category.value,
            rule=rule.text if rule else "",
            as_user=as_username or "",
            eligible=result.eligible,
            excluded=result.excluded,
            sample_size=len(result.sample),
        )
    return result
