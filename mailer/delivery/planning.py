"""Planning: write a campaign's send log with INSERT … SELECT, in chunks of contacts when large."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, insert, literal, or_, select, text
from sqlalchemy.orm import Session

from mailer.campaigns.lifecycle import complete_if_done
from mailer.db import is_postgres, send_log_writers
from mailer.delivery.batches import Batch, Dispatch, batches_for, dispatch_all
from mailer.enums import CampaignStatus, Category, Role, SendStatus, SkipReason
from mailer.models import Campaign, Contact, Send, User, utcnow
from mailer.rules import audience_select, parse_rule
from mailer.runtime import Runtime

#: Exclusions that get a skipped row in the send log; other guards leave the contact out.
RECORDED_SKIPS = (
    SkipReason.OPTED_OUT.value,
    SkipReason.SUPPRESSED.value,
    SkipReason.INACTIVE.value,
)
#: Contacts in the first chunk of the rest of a plan (after the launch's own first chunk), and
#: how much larger each next chunk is: few chunks (few statistics refreshes), yet the workers
#: get the next batches long before they run out.
REST_FIRST_CHUNK_CONTACTS = 8000
REST_CHUNK_GROWTH = 4
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

    With `first_chunk`, only the contacts among the first that many (by id) are planned now,
    so the first batches can go out at once; `finish_planning` plans the rest after this
    transaction commits. Launching (`mailer.campaigns.launch`) moves the campaign to sending
    first; this only plans.
    """
    through = _chunk_end(session, first_chunk) if first_chunk is not None else None
    grace_days = rt.settings.policy_grace_days
    _plan(
        session,
        campaign,
        rule_text,
        now=now,
        policy_grace_days=grace_days,
        through_contact_id=through,
    )
    campaign.planned_through = through
    batches = batches_for(session, campaign.id, Category(campaign.category), rt.settings.batch_size)
    if through is None:
        # a partial plan leaves this to the rest: the first batches go out sooner
        _refresh_statistics(session, batches)
    return batches


def _chunk_end(session: Session, contacts: int, *, after: int | None = None) -> int | None:
    """The id of the `contacts`-th contact (after contact id `after`), or None when there
    are no more contacts than that: the end of a chunk, planned as a range of contact ids.

    A range, not a LIMIT over the audience: PostgreSQL cannot estimate how many contacts the
    guards let through, so for `ORDER BY contact_id LIMIT n` it joins and sorts the whole
    audience (0.3 s at 240,000 contacts); a range is an index scan.
    """
    query = select(Contact.id).order_by(Contact.id).offset(contacts - 1).limit(2)
    if after is not None:
        query = query.where(Contact.id > after)
    found = list(session.scalars(query))
    return found[0] if len(found) == 2 else None


def finish_planning(
    rt: Runtime, campaign_id: int, *, dispatch: Dispatch | None, now: dt.datetime | None = None
) -> list[Batch]:
    """Plan the rest of a campaign launched with a first chunk; a no-op once done.

    The rest is planned in chunks of contacts, each `REST_CHUNK_GROWTH` times the last, each
    committed and dispatched before the next is planned: the workers send while the planner
    plans, and a planner that dies leaves `planned_through` at the last chunk committed.
    The launcher calls it right after the first batches are dispatched; the sweep calls it
    for a launcher that died meanwhile. The campaign row is locked per chunk, so two never
    plan the same contacts. When the rest is empty and the first chunk is already sent, the
    campaign completes here.
    """
    batches: list[Batch] = []
    contacts = REST_FIRST_CHUNK_CONTACTS
    while True:
        is_first = contacts == REST_FIRST_CHUNK_CONTACTS
        chunk, is_done = _plan_next_chunk(rt, campaign_id, now or utcnow(), contacts, is_first)
        dispatch_all(dispatch, chunk)
        batches.extend(chunk)
        if is_done:
            break
        contacts *= REST_CHUNK_GROWTH
    with rt.sessions.begin() as session:
        # after the commits above, so a worker recording the last send of the first chunk
        # meanwhile and this check cannot both miss the moment the campaign is done
        complete_if_done(session, campaign_id)
    return batches


def _plan_next_chunk(
    rt: Runtime, campaign_id: int, now: dt.datetime, contacts: int, is_first: bool
) -> tuple[list[Batch], bool]:
    """Plan the next `contacts` contacts of a half-planned campaign; True once none is left.

    Statistics are refreshed after the first chunk of the rest and the last (each ANALYZE
    costs 0.1-0.5 s of PostgreSQL: not after every chunk).
    """
    with rt.sessions.begin() as session:
        query = select(Campaign).where(
            Campaign.id == campaign_id, Campaign.planned_through.is_not(None)
        )
        if is_postgres(session):
            query = query.with_for_update()
        campaign = session.scalars(query).one_or_none()
        if campaign is None:
            return [], True
        after = campaign.planned_through
        if campaign.status == CampaignStatus.CANCELLED:
            campaign.planned_through = None
            return [], True
        through = _chunk_end(session, contacts, after=after)
        # a planner at work: the sweep leaves this campaign alone for a lease period
        campaign.planned_through, campaign.updated_at = through, utcnow()
        last_id = session.scalar(select(func.max(Send.id)).where(Send.campaign_id == campaign_id))
        _plan(
            session,
            campaign,
            campaign.rule_text,
            now=now,
            policy_grace_days=rt.settings.policy_grace_days,
            after_contact_id=after,
            through_contact_id=through,
        )
        batches = batches_for(
            session,
            campaign_id,
            Category(campaign.category),
            rt.settings.batch_size,
            after_id=last_id or 0,
        )
        if is_first or through is None:
            _refresh_statistics(session, batches)
    return batches, through is None


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
    after_contact_id: int | None = None,
    through_contact_id: int | None = None,
) -> None:
    """Write the send log (or the part of it in the range given) with one INSERT … SELECT."""
    rows = planned_rows(
        session,
        campaign,
        rule_text,
        now=now,
        policy_grace_days=policy_grace_days,
        after_contact_id=after_contact_id,
        through_contact_id=through_contact_id,
    )
    send_log_writers(session)  # no purge deletes a contact planned for, until this commits
    session.execute(insert(Send).from_select(list(PLANNED_COLUMNS), rows))


def planned_rows(
    session: Session,
    campaign: Campaign,
    rule_text: str,
    *,
    now: dt.datetime,
    policy_grace_days: int | None,
    after_contact_id: int | None = None,
    through_contact_id: int | None = None,
) -> Select[Any]:
    """The send-log rows a plan of `campaign` writes, as a SELECT of `PLANNED_COLUMNS`:
    queued, or skipped with a reason; only contacts after / through the ids given.

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
    values: tuple[ColumnElement[Any], ...] = (
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
    )
    rows = select(
        *(value.label(name) for value, name in zip(values, PLANNED_COLUMNS, strict=True))
    ).where(or_(audience.c.skip_reason.is_(None), audience.c.skip_reason.in_(RECORDED_SKIPS)))
    if after_contact_id is not None:
        rows = rows.where(audience.c.contact_id > after_contact_id)
    if through_contact_id is not None:
        rows = rows.where(audience.c.contact_id <= through_contact_id)
    return rows


def _status_case(skip_reason: ColumnElement[str | None]) -> ColumnElement[str]:
    return case(
        (func.coalesce(skip_reason, "") == "", literal(SendStatus.QUEUED.value)),
        else_=literal(SendStatus.SKIPPED.value),
    )
