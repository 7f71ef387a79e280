"""What the admin screens and the API read about campaigns: lists with counts, and reports.

Who sees what: an admin every campaign; marketing the feature and promotion campaigns; an
account manager only the campaigns they created (service mail to their own clients).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, case, func, or_, select
from sqlalchemy.orm import Session

from mailer.access import Actor, deny
from mailer.csvfiles import csv_writer
from mailer.enums import Category, OptOutSource, Role, SendStatus
from mailer.errors import NotFoundError
from mailer.models import Campaign, OptOut, Send
from mailer.template_store.pinning import get_snapshot, version_label

#: How many of the latest campaigns the dashboard looks through for recent bounces.
RECENT_CAMPAIGNS = 50
#: Send statuses still waiting for an outcome.
OPEN_SENDS = (SendStatus.QUEUED, SendStatus.SENDING, SendStatus.DEFERRED)


@dataclass
class CampaignCounts:
    """Per-campaign outcome counts, as the list and the dashboard show them."""

    by_status: dict[str, int] = field(default_factory=dict)
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    opt_outs: int = 0
    bounces: int = 0
    complaints: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def done(self) -> int:
        return sum(n for s, n in self.by_status.items() if s not in OPEN_SENDS)

    def get(self, status: str) -> int:
        return self.by_status.get(status, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.done,
            "sent": self.get(SendStatus.SENT),
            "queued": self.get(SendStatus.QUEUED) + self.get(SendStatus.SENDING),
            "deferred": self.get(SendStatus.DEFERRED),
            "failed": self.get(SendStatus.FAILED),
            "unknown": self.get(SendStatus.UNKNOWN),
            "skipped": self.get(SendStatus.SKIPPED),
            "skipped_by_reason": dict(sorted(self.skipped_by_reason.items())),
            "opt_outs": self.opt_outs,
            "bounces": self.bounces,
            "complaints": self.complaints,
        }


@dataclass
class CampaignRow:
    campaign: Campaign
    counts: CampaignCounts


def visible_campaigns(actor: Actor) -> Select[Any]:
    """The campaigns `actor` may see, as a select to filter further."""
    query = select(Campaign)
    if actor.role == Role.MARKETING:
        query = query.where(Campaign.category.in_((Category.FEATURES, Category.PROMOTIONS)))
    elif actor.role == Role.ACCOUNT_MANAGER:
        query = query.where(Campaign.created_by == actor.username)
    return query


def list_campaign_rows(
    session: Session,
    actor: Actor,
    *,
    status: str = "",
    category: str = "",
    search: str = "",
    limit: int = 50,
    before_id: int | None = None,
) -> list[CampaignRow]:
    """Newest campaigns first (keyset on id), with their counts in three grouped queries."""
    query = visible_campaigns(actor).order_by(Campaign.id.desc()).limit(limit)
    if status:
        query = query.where(Campaign.status == status)
    if category:
        query = query.where(Campaign.category == category)
    if search:
        like = f"%{search.strip()}%"
        query = query.where(or_(Campaign.name.ilike(like), Campaign.template.ilike(like)))
    if before_id is not None:
        query = query.where(Campaign.id < before_id)
    found = list(session.scalars(query))
    counts = campaign_counts(session, [c.id for c in found])
    return [CampaignRow(c, counts[c.id]) for c in found]


def get_visible_campaign(session: Session, actor: Actor, campaign_id: int) -> Campaign:
    """The campaign, if `actor` may see it; NotFoundError, or PermissionDeniedError (audited)."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    visible = session.scalar(visible_campaigns(actor).where(Campaign.id == campaign_id))
    if visible is None:
        raise deny(
            session,
            actor,
            "campaign.view",
            f"campaign {campaign_id} is {campaign.created_by}'s {campaign.category} campaign",
            object_type="campaign",
            object_id=campaign_id,
        )
    return campaign


def campaign_counts(session: Session, ids: Sequence[int]) -> dict[int, CampaignCounts]:
    """Counts for each campaign id (every id present, zeros included)."""
    result = {i: CampaignCounts() for i in ids}
    if not ids:
        return result
    # one pass over the campaigns' sends (index on campaign_id, status): a failure with a 5xx
    # reply or none at all is a bounce
    is_bounce = case(
        (
            (Send.status == SendStatus.FAILED)
            & or_(Send.smtp_code.is_(None), Send.smtp_code >= 500),
            1,
        ),
        else_=0,
    )
    rows = session.execute(
        select(Send.campaign_id, Send.status, Send.skip_reason, func.count(), func.sum(is_bounce))
        .where(Send.campaign_id.in_(ids))
        .group_by(Send.campaign_id, Send.status, Send.skip_reason)
    )
    for campaign_id, status, reason, n, bounces in rows:
        counts = result[campaign_id]
        counts.by_status[status] = counts.by_status.get(status, 0) + n
        counts.bounces += int(bounces or 0)
        if status == SendStatus.SKIPPED and reason:
            counts.skipped_by_reason[reason] = counts.skipped_by_reason.get(reason, 0) + n
    is_complaint = case((OptOut.source == OptOutSource.COMPLAINT, 1), else_=0)
    opted = session.execute(
        select(Send.campaign_id, func.count(), func.sum(is_complaint))
        .join(OptOut, OptOut.send_id == Send.id)
        .where(Send.campaign_id.in_(ids))
        .group_by(Send.campaign_id)
    )
    for campaign_id, n, complaints in opted:
        result[campaign_id].complaints = int(complaints or 0)
        result[campaign_id].opt_outs = n - int(complaints or 0)
    return result


@dataclass(frozen=True)
class SendLine:
    id: int
    email: str
    status: str
    skip_reason: str
    attempts: int
    smtp_code: int | None
    smtp_reply: str
    sent_at: str


def failures(session: Session, campaign_id: int, *, limit: int = 200) -> list[SendLine]:
    """Failed, unknown and deferred sends with the SMTP reply each got, oldest first."""
    query = (
        select(Send)
        .where(
            Send.campaign_id == campaign_id,
            Send.status.in_((SendStatus.FAILED, SendStatus.UNKNOWN, SendStatus.DEFERRED)),
        )
        .order_by(Send.id)
        .limit(limit)
    )
    return [_line(s) for s in session.scalars(query)]


def _line(s: Send) -> SendLine:
    return SendLine(
        s.id,
        s.email,
        s.status,
        s.skip_reason,
        s.attempts,
        s.smtp_code,
        s.smtp_reply,
        s.sent_at.isoformat() if s.sent_at else "",
    )


REPORT_COLUMNS = [
    "send_id",
    "email",
    "status",
    "skip_reason",
    "attempts",
    "smtp_code",
    "smtp_reply",
    "sent_at",
    "template",
    "template_version",
]


def report_csv(session: Session, campaign_id: int, *, chunk: int = 5000) -> Iterator[str]:
    """Every send of the campaign as CSV text chunks (keyset-paged, formula cells defused).

    Each row names the template and the version it was sent with (`built-in` for a file
    template), as kept in the campaign's launch snapshot."""
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(REPORT_COLUMNS)
    campaign = session.get(Campaign, campaign_id)
    sent_with = [
        campaign.template if campaign else "",
        version_label(get_snapshot(session, campaign_id)),
    ]
    last = 0
    while True:
        sends = list(
            session.scalars(
                select(Send)
                .where(Send.campaign_id == campaign_id, Send.id > last)
                .order_by(Send.id)
                .limit(chunk)
            )
        )
        for s in sends:
            line = _line(s)
            writer.writerow([*vars(line).values(), *sent_with])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(sends) < chunk:
            return
        last = sends[-1].id


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small CSV document, every cell safe to open in a spreadsheet (`mailer.csvfiles`)."""
    buffer = io.StringIO()
    writer = csv_writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class Activity:
    """One recent opt-out, bounce or complaint, as the dashboard lists it."""

    kind: str  #: "opt-out", "complaint" or "bounce"
    at: Any
    email: str
    detail: str
    campaign_id: int | None


def recent_activity(
    session: Session, actor: Actor, *, limit: int = 10
) -> dict[str, list[Activity]]:
    """The latest opt-outs, complaints and bounces; an account manager's own clients only."""
    from mailer.models import Contact, Organization

    def scoped(query: Any) -> Any:
        if actor.role != Role.ACCOUNT_MANAGER:
            return query
        return query.join(Organization, Organization.id == Contact.organization_id).where(
            Organization.account_manager_id == actor.user_id
        )

    opt_rows = session.execute(
        scoped(
            select(OptOut, Contact.email, Send.campaign_id)
            .join(Contact, Contact.id == OptOut.contact_id)
            .outerjoin(Send, Send.id == OptOut.send_id)
        )
        .order_by(OptOut.opted_out_at.desc(), OptOut.id.desc())
        .limit(limit * 2)
    )
    opt_outs: list[Activity] = []
    complaints: list[Activity] = []
    for opt, email, campaign_id in opt_rows:
        if opt.source == OptOutSource.COMPLAINT:
            target, kind = complaints, "complaint"
        else:
            target, kind = opt_outs, "opt-out"
        if len(target) < limit:
            detail = f"{opt.category} via {opt.source.replace('_', ' ')}"
            target.append(Activity(kind, opt.opted_out_at, email, detail, campaign_id))
    # the failures of the latest campaigns: the send log is too big to sort every failure
    latest = select(Campaign.id).order_by(Campaign.id.desc()).limit(RECENT_CAMPAIGNS)
    bounce_rows = session.execute(
        scoped(
            select(Send, Contact.email)
            .join(Contact, Contact.id == Send.contact_id)
            .where(Send.campaign_id.in_(latest), Send.status == SendStatus.FAILED)
        )
        .order_by(Send.updated_at.desc(), Send.id.desc())
        .limit(limit)
    )
    bounces = [
        Activity(
            "bounce",
            s.updated_at,
            email,
            f"{s.smtp_code or ''} {s.smtp_reply}".strip(),
            s.campaign_id,
        )
        for s, email in bounce_rows
    ]
    return {"opt_outs": opt_outs, "complaints": complaints, "bounces": bounces}


def running_campaigns(session: Session, actor: Actor) -> list[CampaignRow]:
    """Campaigns sending, paused or scheduled, with their counts."""
    from mailer.enums import CampaignStatus

    live = (CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.SCHEDULED)
    found = list(
        session.scalars(
            visible_campaigns(actor).where(Campaign.status.in_(live)).order_by(Campaign.id.desc())
        )
    )
    counts = campaign_counts(session, [c.id for c in found])
    return [CampaignRow(c, counts[c.id]) for c in found]
