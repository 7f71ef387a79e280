"""Resending a policy notice to the eligible contacts it has not reached; never a second copy.

The resend works on the notice's own campaign, so one send log holds the whole story of a
version and (campaign, contact) stays unique: a contact with a `sent` row is never sent the
notice again. Only clients the notice was for (`coverage.eligible_organization_ids`) are
written to, and only contacts the `policy` guard lets through today:

- an eligible contact with no row (added to a client since the launch) gets a queued row;
- a `failed`, `skipped` or `unknown` row of a contact who is sendable now (address corrected,
  suppression lifted, contact reactivated) is queued again, at the contact's current address,
  with a fresh retry schedule;
- `queued`, `sending`, `deferred` and `sent` rows are left alone.

A completed campaign is reopened (status `sending`, with a detail saying who reopened it); the
new batches go on the priority queue. A second resend with nothing new queues nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, insert, literal, select, update
from sqlalchemy.orm import Session

from mailer.access import Actor, audit, require
from mailer.campaigns.lifecycle import transition
from mailer.db import is_postgres, send_log_writers
from mailer.delivery.batches import Dispatch, cut_batches, dispatch_all
from mailer.delivery.planning import PLANNED_COLUMNS
from mailer.enums import CampaignStatus, Category, SendStatus
from mailer.errors import PolicyError
from mailer.models import Campaign, Contact, PolicyVersion, Send, utcnow
from mailer.policy.coverage import eligible_organization_ids, require_version
from mailer.rules import audience_select
from mailer.runtime import Runtime


@dataclass
class ResendReport:
    """What `resend_notice` queued: rows added for new contacts, rows queued again."""

    version: str
    campaign_id: int
    added: int = 0
    requeued: int = 0
    is_reopened: bool = False
    batches: int = 0

    @property
    def queued(self) -> int:
        return self.added + self.requeued


def resend_notice(
    rt: Runtime,
    version: str,
    *,
    actor: Actor,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> ResendReport:
    """Queue the notice for every eligible contact not yet sent it; never a second copy.

    See the module docstring for what is queued. Refused for a version without a notice,
    while the notice is still being planned, and while it is paused, cancelled or failed.
    """
    now = now or utcnow()
    with rt.sessions.begin() as session:
        require(
            session,
            actor,
            "policy.resend",
            object_type="policy_version",
            object_id=version,
            reason="only an admin may resend a policy notice",
            allowed=actor.is_admin,
        )
        policy = require_version(session, version)
        campaign = _notice_campaign(session, policy)
        report = ResendReport(version, campaign.id)
        eligible = _sendable_contacts(rt, campaign, now)
        # before any send row is locked: a purge holding it alone may be deleting some
        send_log_writers(session)
        requeued = _requeue(session, campaign.id, eligible, now)
        added = _add_missing(session, campaign.id, eligible, now)
        report.requeued, report.added = len(requeued), len(added)
        batches = cut_batches(
            campaign.id, Category.POLICY, requeued + added, rt.settings.batch_size
        )
        report.batches = len(batches)
        if batches and campaign.status == CampaignStatus.COMPLETED:
            report.is_reopened = transition(
                session,
                campaign.id,
                CampaignStatus.SENDING,
                actor=actor,
                action="reopen",
                detail=f"reopened by {actor.username} to resend the notice to {report.queued} "
                "contacts",
                sources=(CampaignStatus.COMPLETED,),
                values={"completed_at": None},
                now=now,
            )
        audit(
            session,
            actor,
            "policy.resend",
            object_type="policy_version",
            object_id=version,
            campaign_id=campaign.id,
            added=report.added,
            requeued=report.requeued,
            reopened=report.is_reopened,
        )
    dispatch_all(dispatch, batches)
    return report


def _notice_campaign(session: Session, policy: PolicyVersion) -> Campaign:
    if policy.campaign_id is None:
        raise PolicyError(
            f"version {policy.version} was not published as material, so no notice goes out "
            "for it; publish a material version to notify clients"
        )
    query = select(Campaign).where(Campaign.id == policy.campaign_id)
    if is_postgres(session):
        query = query.with_for_update()  # two resends at once: the second waits, finds nothing
    campaign = session.scalars(query).one()
    if campaign.status not in (CampaignStatus.COMPLETED, CampaignStatus.SENDING):
        raise PolicyError(
            f"the notice campaign {campaign.id} of version {policy.version} is "
            f"{campaign.status}; resend works on a sending or completed notice"
            + (" (resume it first)" if campaign.status == CampaignStatus.PAUSED else "")
        )
    if campaign.planned_through is not None:
        # a row added now for a contact the plan has yet to reach would collide with it
        raise PolicyError(
            f"the notice campaign {campaign.id} of version {policy.version} is still being "
            "planned; resend once planning is done (seconds after publishing, or at the "
            "scheduler's next sweep if the publisher stopped): `mailer policy coverage "
            f"{policy.version}` says when"
        )
    return campaign


def _sendable_contacts(rt: Runtime, campaign: Campaign, now: dt.datetime) -> Any:
    """Contacts the policy guard lets through today, of clients the notice was for."""
    audience = audience_select(
        None,
        Category.POLICY,
        today=now.date(),
        now=now,
        policy_grace_days=rt.settings.policy_grace_days,
    ).subquery()
    orgs = eligible_organization_ids(campaign, rt.settings.policy_grace_days).subquery()
    return (
        select(audience.c.contact_id, audience.c.organization_id, audience.c.email)
        .where(
            audience.c.skip_reason.is_(None),
            audience.c.organization_id.in_(select(orgs.c.organization_id)),
        )
        .subquery()
    )


def _requeue(session: Session, campaign_id: int, eligible: Any, now: dt.datetime) -> list[int]:
    """Failed or skipped rows of contacts now sendable: queued again, at the current address."""
    current_email = select(Contact.email).where(Contact.id == Send.contact_id)
    rows = session.execute(
        update(Send)
        .where(
            Send.campaign_id == campaign_id,
            Send.status.in_(
                (SendStatus.FAILED.value, SendStatus.SKIPPED.value, SendStatus.UNKNOWN.value)
            ),
            Send.contact_id.in_(select(eligible.c.contact_id)),
        )
        .values(
            status=SendStatus.QUEUED.value,
            skip_reason="",
            email=current_email.scalar_subquery(),
            # a fresh delivery: the give-up clock and the retry schedule start over
            attempts=0,
            first_attempt_at=None,
            next_attempt_at=None,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(Send.id)
        .execution_options(synchronize_session=False)
    )
    return [row.id for row in rows]


def _add_missing(session: Session, campaign_id: int, eligible: Any, now: dt.datetime) -> list[int]:
    """Queued rows for eligible contacts the send log has no row for (added since launch)."""
    has_row = exists().where(
        Send.campaign_id == campaign_id, Send.contact_id == eligible.c.contact_id
    )
    rows = select(
        literal(campaign_id),
        eligible.c.contact_id,
        eligible.c.organization_id,
        literal(Category.POLICY.value),
        eligible.c.email,
        literal(SendStatus.QUEUED.value),
        literal(""),
        literal(0),
        literal(now, type_=Send.created_at.type),
        literal(now, type_=Send.updated_at.type),
    ).where(~has_row)
    result = session.execute(
        insert(Send)
        .from_select(
            list(PLANNED_COLUMNS),
            rows,
        )
        .returning(Send.id)
    )
    return [row.id for row in result]
