"""Publishing privacy-policy versions, the mandatory notice to every client, and resending it.

CPI's policy promises to notify clients by email when it changes how information is used or
disclosed. `publish_policy` stores a version and, when the change is material, creates and
launches the `policy` notice campaign in the same transaction: the version, the campaign and
its whole send log exist together or not at all. The `policy` category guard picks the audience
(every contact of every client whose agreement is active or ended less than
`policy_grace_days` ago); opt-outs never apply, suppressed addresses are skipped and counted
as undeliverable. The notice rides the priority queue with at-least-once delivery.

Resending (`resend_notice`) works on the same campaign, so one send log holds the whole story
of a version and (campaign, contact) stays unique: a contact with a `sent` row is never sent
the notice again. Eligible contacts without a row get one; failed or skipped rows of contacts
who are now sendable (address fixed, suppression lifted, contact reactivated) are queued again;
a completed campaign is reopened. Only clients the notice was for (see `mailer.policy_coverage`)
are written to. A second resend with nothing new sends nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from sqlalchemy import exists, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer import audit
from mailer.campaigns import summarize
from mailer.config import Settings
from mailer.db import is_postgres
from mailer.delivery.batches import Batch, Dispatch, cut_batches, dispatch_all
from mailer.delivery.completion import send_counts
from mailer.delivery.planning import start_sending, validate_launch
from mailer.enums import CampaignStatus, Category, Role, SendStatus
from mailer.errors import NotFoundError, PermissionDeniedError, PolicyError
from mailer.models import Campaign, Contact, PolicyVersion, Send, User, utcnow
from mailer.permissions import find_user
from mailer.policy_coverage import CoverageReport, campaign_coverage, eligible_organization_ids
from mailer.policy_text import ensure_first_version, get_version
from mailer.rules import audience_select
from mailer.runtime import Runtime

NOTICE_TEMPLATE = "policy/privacy-policy-change"
#: Labels appear in URLs (`/privacy/V`) and file names: keep them plain.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
#: Lines of a summary file that start with one of these list the changes one by one.
BULLETS = ("- ", "* ", "• ")


@dataclass
class PublishReport:
    """What `publish_policy` stored and, for a material change, the notice it launched."""

    version: str
    effective_on: dt.date
    is_material: bool
    published_at: dt.datetime
    published_by: str
    campaign_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: Why planned contacts were skipped (suppressed: undeliverable; not_a_client …).
    skip_reasons: dict[str, int] = field(default_factory=dict)
    batches: int = 0


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


def human_date(day: dt.date) -> str:
    """`January 1, 2027`: how the notice shows the effective date."""
    return f"{day:%B} {day.day}, {day.year}"


def split_summary(text: str) -> tuple[str, list[str]]:
    """A summary file's prose (one paragraph) and its bulleted lines (`- …`), each a change."""
    prose: list[str] = []
    changes: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(BULLETS):
            changes.append(stripped[2:].strip())
        elif stripped:
            prose.append(stripped)
    return " ".join(prose), changes


def notice_params(settings: Settings, version: PolicyVersion) -> dict[str, object]:
    """The campaign params the notice template reads (see `messages.context.policy_view`)."""
    summary, changes = split_summary(version.summary)
    return {
        "version": version.version,
        "effective_date": human_date(version.effective_on),
        "summary": summary,
        "changes": changes,
        "policy_url": f"{settings.public_base_url.rstrip('/')}/privacy/{version.version}",
    }


def _require_admin(user: User, action: str) -> None:
    if user.role != Role.ADMIN:
        raise PermissionDeniedError(
            f"user {user.username!r} has role {user.role}; only an admin may {action}"
        )


def _check_input(version: str, text: str, summary: str, is_material: bool) -> None:
    if not LABEL_PATTERN.fullmatch(version):
        raise PolicyError(
            f"version label {version!r} is not usable: use 1–32 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes the URL /privacy/<label>)"
        )
    if not text.strip():
        raise PolicyError(f"the text of version {version} is empty; give the full policy text")
    if is_material and not summary.strip():
        raise PolicyError(
            f"version {version} is material but its summary is empty; clients are told what "
            "changed, so give a summary (prose, and one '- ' line per change)"
        )


def publish_policy(
    rt: Runtime,
    *,
    version: str,
    effective_on: dt.date,
    text: str,
    summary: str,
    is_material: bool,
    username: str,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> PublishReport:
    """Store a policy version (admins only); when material, launch the notice to every client.

    Refuses a label already published and an effective date before the newest version's.
    The notice's batches go to `dispatch` after the transaction commits.
    """
    now = now or utcnow()
    _check_input(version, text, summary, is_material)
    batches: list[Batch] = []
    with rt.sessions.begin() as session:
        user = find_user(session, username)
        _require_admin(user, "publish a policy version")
        ensure_first_version(session)
        _refuse_taken_or_early(session, version, effective_on)
        policy = PolicyVersion(
            version=version,
            effective_on=effective_on,
            text=text,
            summary=summary,
            is_material=is_material,
            published_at=now,
            published_by=user.username,
        )
        session.add(policy)
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError as exc:
            raise PolicyError(
                f"version {version} was published by someone else a moment ago; "
                "`mailer policy show` tells who"
            ) from exc
        report = PublishReport(version, effective_on, is_material, now, user.username)
        if is_material:
            campaign, batches = _launch_notice(rt, session, policy, user, now)
            planned = summarize(session, campaign)
            report.campaign_id = campaign.id
            report.counts, report.skip_reasons = planned.counts, planned.skip_reasons
            report.batches = len(batches)
        audit.record(
            session,
            user.username,
            "policy.publish",
            object_type="policy_version",
            object_id=version,
            effective_on=effective_on.isoformat(),
            is_material=is_material,
            campaign_id=report.campaign_id,
            counts=report.counts,
            skip_reasons=report.skip_reasons,
        )
    dispatch_all(dispatch, batches)
    return report


def _refuse_taken_or_early(session: Session, version: str, effective_on: dt.date) -> None:
    taken = get_version(session, version)
    if taken is not None:
        raise PolicyError(
            f"version {version} was already published on {taken.published_at:%Y-%m-%d %H:%M} "
            f"UTC by {taken.published_by}; a published version never changes, publish the "
            "change under a new label"
        )
    newest = session.scalar(
        select(PolicyVersion)
        .order_by(PolicyVersion.effective_on.desc(), PolicyVersion.id.desc())
        .limit(1)
    )
    if newest is not None and effective_on < newest.effective_on:
        raise PolicyError(
            f"version {version} would take effect on {effective_on.isoformat()}, before version "
            f"{newest.version} ({newest.effective_on.isoformat()}); give an effective date on "
            "or after it"
        )


def _launch_notice(
    rt: Runtime, session: Session, policy: PolicyVersion, user: User, now: dt.datetime
) -> tuple[Campaign, list[Batch]]:
    """Create and launch the notice campaign in the caller's transaction; link it to the version."""
    validate_launch(rt, Category.POLICY, NOTICE_TEMPLATE, "", "")
    campaign = Campaign(
        name=f"Privacy policy version {policy.version} notice",
        category=Category.POLICY.value,
        template=NOTICE_TEMPLATE,
        created_by=user.username,
        status=CampaignStatus.DRAFT.value,
        params=notice_params(rt.settings, policy),
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    audit.record(
        session,
        user.username,
        "campaign.create",
        object_type="campaign",
        object_id=campaign.id,
        name=campaign.name,
        category=campaign.category,
        template=NOTICE_TEMPLATE,
        policy_version=policy.version,
    )
    batches = start_sending(rt, session, campaign, "", user, now=now)
    policy.campaign_id = campaign.id
    audit.record(
        session,
        user.username,
        "campaign.launch",
        object_type="campaign",
        object_id=campaign.id,
        rule="",
        batches=len(batches),
        counts=send_counts(session, campaign.id),
    )
    return campaign, batches


def require_version(session: Session, version: str) -> PolicyVersion:
    found = get_version(session, version)
    if found is None:
        raise NotFoundError(f"no policy version {version!r}; `mailer policy list` shows them")
    return found


def coverage(rt: Runtime, version: str, *, viewed_by: str = "") -> CoverageReport:
    """Per eligible client, how the notice of `version` fared; audited when `viewed_by` is given.

    A version that was not material has no notice: its report lists no clients.
    """
    with rt.sessions.begin() as session:
        policy = require_version(session, version)
        report = CoverageReport(
            policy.version,
            policy.effective_on,
            policy.is_material,
            policy.published_at,
            policy.published_by,
        )
        campaign = session.get(Campaign, policy.campaign_id) if policy.campaign_id else None
        if campaign is not None:
            report.campaign_id = campaign.id
            report.campaign_status = campaign.status
            report.launched_at = campaign.launched_at
            report.clients = campaign_coverage(session, campaign, rt.settings.policy_grace_days)
        if viewed_by:
            # the report names clients and their account managers: an export, so audited
            audit.record(
                session,
                viewed_by,
                "policy.coverage",
                object_type="policy_version",
                object_id=version,
                eligible_clients=len(report.clients),
                not_reached_clients=len(report.not_reached),
            )
    return report


def resend_notice(
    rt: Runtime,
    version: str,
    *,
    username: str,
    dispatch: Dispatch | None,
    now: dt.datetime | None = None,
) -> ResendReport:
    """Queue the notice for every eligible contact not yet sent it; never a second copy.

    See the module docstring for what is queued. Refused for a version without a notice, and
    while the notice campaign is paused, cancelled or failed.
    """
    now = now or utcnow()
    with rt.sessions.begin() as session:
        user = find_user(session, username)
        _require_admin(user, "resend a policy notice")
        policy = require_version(session, version)
        campaign = _notice_campaign(session, policy)
        report = ResendReport(version, campaign.id)
        eligible = _sendable_contacts(rt, campaign, now)
        requeued = _requeue(session, campaign.id, eligible, now)
        added = _add_missing(session, campaign.id, eligible, now)
        report.requeued, report.added = len(requeued), len(added)
        batches = cut_batches(
            campaign.id, Category.POLICY, requeued + added, rt.settings.batch_size
        )
        report.batches = len(batches)
        if batches and campaign.status == CampaignStatus.COMPLETED:
            campaign.status = CampaignStatus.SENDING.value
            campaign.completed_at = None
            campaign.updated_at = now
            campaign.status_detail = (
                f"reopened by {user.username} to resend the notice to {report.queued} contacts"
            )
            report.is_reopened = True
        audit.record(
            session,
            user.username,
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
    return campaign


def _sendable_contacts(rt: Runtime, campaign: Campaign, now: dt.datetime):  # type: ignore[no-untyped-def]
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


def _requeue(session: Session, campaign_id: int, eligible, now: dt.datetime) -> list[int]:  # type: ignore[no-untyped-def]
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


def _add_missing(session: Session, campaign_id: int, eligible, now: dt.datetime) -> list[int]:  # type: ignore[no-untyped-def]
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
        .returning(Send.id)
    )
    return [row.id for row in result]
