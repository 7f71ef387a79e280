"""Planning: validate a launch and write the whole send log with one INSERT … SELECT."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, case, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session

from mailer.db import is_postgres
from mailer.delivery.batches import Batch, batches_for
from mailer.delivery.completion import complete_now
from mailer.enums import CampaignStatus, Category, Role, SendStatus, SkipReason
from mailer.errors import CampaignError, NotFoundError
from mailer.messages import check_template
from mailer.models import Campaign, Send, User
from mailer.rules import audience_select, load_audiences, parse_rule
from mailer.runtime import Runtime

#: Exclusions that get a skipped row in the send log; other guards leave the contact out.
RECORDED_SKIPS = (
    SkipReason.OPTED_OUT.value,
    SkipReason.SUPPRESSED.value,
    SkipReason.INACTIVE.value,
)
#: Plans at least this big refresh the planner's statistics of the send log (PostgreSQL).
_ANALYZE_AFTER_ROWS = 1000
#: States from which `launch` may start sending.
LAUNCHABLE = (CampaignStatus.DRAFT, CampaignStatus.MISSED, CampaignStatus.SCHEDULED)


def start_sending(
    rt: Runtime,
    session: Session,
    campaign: Campaign,
    rule_text: str,
    user: User | None,
    *,
    now: dt.datetime,
) -> list[Batch]:
    """Claim the campaign for sending and plan its send log in the caller's transaction.

    The conditional UPDATE is what keeps two schedulers or two clicks from planning twice.
    """
    claimed = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.status.in_(LAUNCHABLE))
        .values(
            status=CampaignStatus.SENDING,
            launched_at=now,
            rule_text=rule_text,
            status_detail="",
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        raise CampaignError(f"campaign {campaign.id} was launched by someone else meanwhile")
    session.refresh(campaign)
    _plan(session, campaign, rule_text, now=now, policy_grace_days=rt.settings.policy_grace_days)
    batches = batches_for(session, campaign.id, Category(campaign.category), rt.settings.batch_size)
    planned = sum(b.last_id - b.first_id + 1 for b in batches)
    if planned >= _ANALYZE_AFTER_ROWS and is_postgres(session):
        # fresh statistics, or the planner finds a slice's rows by scanning the whole campaign
        session.execute(text("ANALYZE sends"))
    if not batches:
        complete_now(campaign, now, "nobody to send to")
    return batches


def _plan(
    session: Session,
    campaign: Campaign,
    rule_text: str,
    *,
    now: dt.datetime,
    policy_grace_days: int,
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
    session.execute(
        insert(Send).from_select(
            [
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
            ],
            rows,
        )
    )


def _status_case(skip_reason: ColumnElement[str | None]) -> ColumnElement[str]:
    return case(
        (func.coalesce(skip_reason, "") == "", literal(SendStatus.QUEUED.value)),
        else_=literal(SendStatus.SKIPPED.value),
    )


def validate_launch(
    rt: Runtime, category: Category, template: str, audience: str, rule_text: str
) -> str:
    """Check template and audience; return the rule text to launch with."""
    loaded = check_template(rt.settings, template)
    if loaded.category != category:
        raise CampaignError(
            f"template {template!r} is a {loaded.category} template; this is a {category} "
            "campaign: pick a template from templates/" + str(category)
        )
    if audience:
        audiences = load_audiences(rt.settings.audiences_dir)
        if audience not in audiences:
            known = ", ".join(sorted(audiences)) or "none"
            raise NotFoundError(f"no saved audience {audience!r} (known: {known})")
        rule_text = audiences[audience].rule_text
    if rule_text.strip():
        parse_rule(rule_text, source=f"audience {audience}" if audience else "rule")
    return rule_text
