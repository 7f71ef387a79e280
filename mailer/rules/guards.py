"""Category guards: who may receive each category, ANDed onto every rule, which cannot undo them.

Each guard is a condition that excludes a contact and the SkipReason that names it. The first
guard that holds names the reason; a contact no guard excludes is eligible.

| category            | guards, in order                                                       |
| ------------------- | ---------------------------------------------------------------------- |
| features/promotions | kind client or prospect, contact active, not suppressed, no opt-out of |
|                     | the category or of all marketing                                       |
| service             | client, active agreement, own client (when an account manager asks),   |
|                     | contact active, not suppressed, no opt-out of service                  |
| policy              | client (active or former: every client whose information is held;      |
|                     | with a grace period, agreement active or ended within it), contact     |
|                     | active, not suppressed (opt-outs never apply: the notice is mandatory) |
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, FromClause, and_, not_, or_, select

from mailer.enums import ALL_MARKETING, Category, ContactStatus, OrganizationKind, SkipReason
from mailer.models import Contact, OptOut, Organization, Suppression

contacts = Contact.__table__
organizations = Organization.__table__
opt_outs = OptOut.__table__
suppressions = Suppression.__table__

Guard = tuple[ColumnElement[bool], SkipReason]


def agreement_active(today: dt.date) -> ColumnElement[bool]:
    """Started on or before today and not ended on or before today."""
    started = organizations.c.agreement_started_on
    ended = organizations.c.agreement_ended_on
    return and_(started.is_not(None), started <= today, or_(ended.is_(None), ended > today))


def agreement_ended(today: dt.date) -> ColumnElement[bool]:
    ended = organizations.c.agreement_ended_on
    return and_(ended.is_not(None), ended <= today)


def guarded_from(
    category: Category,
    *,
    today: dt.date,
    account_manager_id: int | None = None,
    policy_grace_days: int | None = None,
) -> tuple[FromClause, list[Guard]]:
    """Contacts joined to what the guards of `category` need, and those guards in order."""
    # Outer joins, not correlated EXISTS: the planner hashes the suppression and opt-out
    # lists once instead of probing an index per contact (a million probes at full scale).
    suppressed = suppressions.alias("guard_suppressions")
    joined = contacts.join(
        organizations, organizations.c.id == contacts.c.organization_id
    ).outerjoin(suppressed, suppressed.c.address_hash == contacts.c.address_hash)
    kind = organizations.c.kind
    not_client = or_(kind.is_(None), kind != OrganizationKind.CLIENT.value)
    inactive = contacts.c.status != ContactStatus.ACTIVE.value
    guards: list[Guard] = []
    if category.is_marketing:
        guards.append((kind.not_in([k.value for k in OrganizationKind]), SkipReason.NOT_ELIGIBLE))
    elif category is Category.SERVICE:
        guards.append((not_client, SkipReason.NOT_A_CLIENT))
        guards.append((not_(agreement_active(today)), SkipReason.NO_ACTIVE_AGREEMENT))
        if account_manager_id is not None:
            manager = organizations.c.account_manager_id
            guards.append(
                (
                    or_(manager.is_(None), manager != account_manager_id),
                    SkipReason.NOT_OWN_CLIENT,
                )
            )
    else:
        guards.append((not_client, SkipReason.NOT_A_CLIENT))
        if policy_grace_days is not None:
            ended = organizations.c.agreement_ended_on
            grace_start = today - dt.timedelta(days=policy_grace_days)
            within_grace = and_(agreement_ended(today), ended > grace_start)
            guards.append(
                (not_(or_(agreement_active(today), within_grace)), SkipReason.NOT_ELIGIBLE)
            )
    guards.append((inactive, SkipReason.INACTIVE))
    guards.append((suppressed.c.id.is_not(None), SkipReason.SUPPRESSED))
    if category.allows_opt_out:
        scopes = [category.value]
        if category.is_marketing:
            scopes.append(ALL_MARKETING)
        opted = (
            select(opt_outs.c.address_hash)
            .where(opt_outs.c.revoked_at.is_(None), opt_outs.c.category.in_(scopes))
            .distinct()
            .subquery("guard_opt_outs")
        )
        joined = joined.outerjoin(opted, opted.c.address_hash == contacts.c.address_hash)
        guards.append((opted.c.address_hash.is_not(None), SkipReason.OPTED_OUT))
    return joined, guards
