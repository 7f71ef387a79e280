"""Planning: write a campaign's send log with one INSERT … SELECT (in two steps when large)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, case, func, insert, literal, or_, select, text
from sqlalchemy.orm import Session

from mailer.campaigns.lifecycle import complete_if_done
from mailer.db import is_postgres
from mailer.delivery.batches import Batch, Dispatch, batches_for, dispatch_all
from mailer.enums import CampaignStatus, Category, Role, SendStatus, SkipReason
from mailer.models import Campaign, Send, User, utcnow
from mailer.rules import audience_select, parse_rule
from mailer.runtime import Runtime

#: Exclusions that get a skipped row in the send log; other guards leave the contact out.
RECORDED_SKIPS = (
    SkipReason.OPTED_OUT.value,
    SkipReason.SUPPRESSED.value,
    SkipReason.INACTIVE.value,
)
#: Plans at least this big refresh the planner's statistics of the send log (PostgreSQL).
_ANALYZE_AFTER_ROWS = 1000
#: The send-log columns a plan fills, in the order of the SELECT that feeds it.
PLANNED_COLUMNS = (
    "campaign_id",
    "contact_id",
    "organization_id",
    "category",
    "email",
    "status",
    "skip_reason",
    "attempts",
    "created_at",
    "updated_at",
)


def plan_send_log(
    rt: Runtime,
    session: Session,
    campaign: Campaign,
    rule_text: str,
    *,
    now: dt.datetime,
    first_chunk: int | None = None,
) -> list[Batch]:
    """Plan a campaign's send log in the caller's transaction; return its batches.

    With `first_chunk`, only that many rows are planned now, so the first batches can go out
    at once; `finish_planning` plans the rest after this transaction commits. Launching
    (`mailer.campaigns.launch`) moves the campaign to sending first; this only plans.
    """
    grace_days = rt.settings.policy_grace_days
    _plan(session, campaign, rule_text, now=now, policy_grace_days=grace_days, limit=first_chunk)
    if first_chunk is not None:
        planned = session.scalar(
            select(func.count()).select_from(Send).where(Send.campaign_id == campaign.id)
        )
        if planned == first_chunk:
            campaign.planned_through = session.scalar(
                select(func.max(Send.contact_id)).where(Send.campaign_id == campaign.id)
            )
    batches = batches_for(session, campaign.id, Category(campaign.category), rt.settings.batch_size)
    _refresh_statistics(session, batches)
    return batches


def finish_planning(
    rt: Runtime, campaign_id: int, *, dispatch: Dispatch | None, now: dt.datetime | None = None
) -> list[Batch]:
    """Plan the rest of a campaign launched with a first chunk; a no-op once done.

    The launcher calls it right after the first batches are dispatched; the sweep calls it
    for a launcher that died meanwhile. The campaign row is locked, so two never plan twice.
    When the rest is empty and the first chunk is already sent, the campaign completes here.
    """
    batches = _plan_rest(rt, campaign_id, now or utcnow())
    dispatch_all(dispatch, batches)
    with rt.sessions.begin() as session:
        # after the commit above, so a worker recording the last send of the first chunk
        # meanwhile and this check cannot both miss the moment the campaign is done
        complete_if_done(session, campaign_id)
    return batches


def _plan_rest(rt: Runtime, campaign_id: int, now: dt.datetime) -> list[Batch]:
    with rt.sessions.begin() as session:
        query = select(Campaign).where(
            Campaign.id == campaign_id, Campaign.planned_through.is_not(None)
        )
        if is_postgres(session):
            query = query.with_for_update()
        campaign = session.scalars(query).one_or_none()
        if campaign is None:
            return []
        after, campaign.planned_through = campaign.planned_through, None
        if campaign.status == CampaignStatus.CANCELLED:
            return []
        last_id = session.scalar(select(func.max(Send.id)).where(Send.campaign_id == campaign_id))
        _plan(
            session,
            campaign,
            campaign.rule_text,
            now=now,
            policy_grace_days=rt.settings.policy_grace_days,
            after_contact_id=after,
        )
        batches = batches_for(
            session,
            campaign_id,
            Category(campaign.category),
            rt.settings.batch_size,
            after_id=last_id or 0,
        )
        _refresh_statistics(session, batches)
    return batches


def _refresh_statistics(session: Session, batches: list[Batch]) -> None:
    planned = sum(b.last_id - b.first_id + 1 for b in batches)
    if planned >= _ANALYZE_AFTER_ROWS and is_postgres(session):
        # fresh statistics, or the planner finds a slice's rows by scanning the whole campaign
        session.execute(text("ANALYZE sends"))


def _plan(
    session: Session,
    campaign: Campaign,
    rule_text: str,
    *,
    now: dt.datetime,
    policy_grace_days: int | None,
    limit: int | None = None,
    after_contact_id: int | None = None,
) -> None:
    """Write the whole send log with one INSERT … SELECT: queued, or skipped with a reason.

    Contacts the rule matched but who may not receive the category at all (prospects for
    service mail, another manager's clients …) get no row: at scale that would be a row per
    contact in the database. Those who would receive it but for their consent or address
    (opted out, suppressed, inactive) get a skipped row, so the send log shows why.
    """
    rule = parse_rule(rule_text, source=f"campaign {campaign.id}") if rule_text.strip() else None
    # an account manager's campaign reaches only their own clients, whoever launches it
    creator = session.scalars(select(User).where(User.username == campaign.created_by)).first()
    manager_id = creator.id if creator and creator.role == Role.ACCOUNT_MANAGER else None
    audience = audience_select(
        rule,
        Category(campaign.category),
        today=now.date(),
        now=now,
        account_manager_id=manager_id,
        policy_grace_days=policy_grace_days,
    ).subquery()
    rows = select(
        literal(campaign.id),
        audience.c.contact_id,
        audience.c.organization_id,
        literal(campaign.category),
        audience.c.email,
        _status_case(audience.c.skip_reason),
        func.coalesce(audience.c.skip_reason, ""),
        literal(0),
        literal(now, type_=Send.created_at.type),
        literal(now, type_=Send.updated_at.type),
    ).where(or_(audience.c.skip_reason.is_(None), audience.c.skip_reason.in_(RECORDED_SKIPS)))
    if after_contact_id is not None:
        rows = rows.where(audience.c.contact_id > after_contact_id)
    if limit is not None:
        # keyset order, so the rest can be planned from the last contact id
        rows = rows.order_by(audience.c.contact_id).limit(limit)
    session.execute(
        insert(Send).from_select(
            list(PLANNED_COLUMNS),
            rows,
        )
    )


def _status_case(skip_reason: ColumnElement[str | None]) -> ColumnElement[str]:
    return case(
        (func.coalesce(skip_reason, "") == "", literal(SendStatus.QUEUED.value)),
        else_=literal(SendStatus.SKIPPED.value),
    )
