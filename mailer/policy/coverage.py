"""Who was told: per client, how a policy version's notice fared, and the clients nobody reached.

A client counts as *eligible* for a notice when the notice was planned for it: it has a row in
the notice campaign's send log that no organization-level guard skipped (not a client, or, with
`MAILER_POLICY_GRACE_DAYS` set, an agreement ended too long ago), or it was an eligible client
on the launch day and already existed then (so a client with no contact at all is still named).
By default every client organization whose information is held is eligible, active or former:
the report shows the two apart, a client being *active* when its agreement was in force on the
launch day and *former* otherwise. A client added after the
launch is never counted as missing; `mailer policy resend` does not write to it either.

Per client, each contact's send row falls in one class:

| class         | send rows                                                              |
| ------------- | ---------------------------------------------------------------------- |
| sent          | sent                                                                   |
| pending       | queued, sending, deferred                                              |
| undeliverable | skipped as suppressed, or failed while the address is suppressed (hard |
|               | bounce, complaint)                                                     |
| failed        | failed otherwise (gave up after retries, sender-side 5.7.x), unknown   |
| skipped       | skipped for a contact-level reason (inactive contact, no SMTPUTF8 …)   |

While the notice's send log is still being planned (the publisher plans it in chunks after the
first, which commits with the version; the sweep finishes a plan its publisher left half done),
the contacts not yet planned are counted as the planner will write them (mostly pending), and
the report is not finished.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, not_, null, or_, select
from sqlalchemy.orm import Session

from mailer.access.actor import Actor, require
from mailer.access.actor import audit as access_audit
from mailer.delivery.planning import planned_rows
from mailer.enums import CampaignStatus, OrganizationKind, SendStatus, SkipReason
from mailer.errors import NotFoundError
from mailer.models import (
    Campaign,
    Contact,
    Organization,
    PolicyVersion,
    Send,
    Suppression,
    User,
    utcnow,
)
from mailer.policy.text import get_version
from mailer.rules.guards import agreement_active, agreement_ended
from mailer.runtime import Runtime

#: Skip reasons that say the organization, not the contact, was outside the policy audience.
ORG_LEVEL_SKIPS = (SkipReason.NOT_A_CLIENT.value, SkipReason.NOT_ELIGIBLE.value)
#: Send statuses still on their way.
PENDING = (SendStatus.QUEUED.value, SendStatus.SENDING.value, SendStatus.DEFERRED.value)
CLASSES = ("sent", "pending", "undeliverable", "failed", "skipped")


@dataclass
class ClientCoverage:
    """How the notice fared for one eligible client organization (counts are contacts)."""

    organization_id: int
    external_id: str
    name: str
    account_manager: str
    #: The agreement was in force on the day the notice was launched (else a former client).
    is_active: bool = True
    sent: int = 0
    pending: int = 0
    undeliverable: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def contacts(self) -> int:
        return self.sent + self.pending + self.undeliverable + self.failed + self.skipped

    @property
    def is_reached(self) -> bool:
        return self.sent > 0

    @property
    def reason(self) -> str:
        """Why no contact was reached ("" when one was): what compliance has to act on."""
        if self.is_reached:
            return ""
        if self.pending:
            return f"still sending ({self.pending} pending)"
        if not self.contacts:
            return "no contacts"
        parts = []
        if self.undeliverable:
            parts.append(f"{self.undeliverable} undeliverable (suppressed or hard bounce)")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            parts.append(f"{self.skipped} inactive or not sendable")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "external_id": self.external_id,
            "name": self.name,
            "account_manager": self.account_manager,
            "client": "active" if self.is_active else "former",
            **{name: getattr(self, name) for name in CLASSES},
            "is_reached": self.is_reached,
            "reason": self.reason,
        }


@dataclass
class CoverageReport:
    """The coverage proof of one policy version's notice."""

    version: str
    effective_on: dt.date
    is_material: bool
    published_at: dt.datetime
    published_by: str
    campaign_id: int | None = None
    campaign_status: str = ""
    launched_at: dt.datetime | None = None
    #: The send log is still being planned: contacts not yet planned count as pending.
    is_planning: bool = False
    clients: list[ClientCoverage] = field(default_factory=list)

    @property
    def is_finished(self) -> bool:
        """Nothing is on its way any more (the numbers will not change by themselves)."""
        if self.is_planning:
            return False
        return self.campaign_status not in (CampaignStatus.SENDING, CampaignStatus.PAUSED)

    @property
    def reached(self) -> list[ClientCoverage]:
        return [c for c in self.clients if c.is_reached]

    @property
    def not_reached(self) -> list[ClientCoverage]:
        return [c for c in self.clients if not c.is_reached]

    @property
    def contacts(self) -> dict[str, int]:
        return {name: sum(getattr(c, name) for c in self.clients) for name in CLASSES}

    def by_client_status(self) -> dict[str, dict[str, int]]:
        """Eligible, reached and not reached clients, for active and former clients apart."""
        shown: dict[str, dict[str, int]] = {}
        for label, is_active in (("active", True), ("former", False)):
            group = [c for c in self.clients if c.is_active is is_active]
            reached = sum(1 for c in group if c.is_reached)
            shown[label] = {
                "eligible": len(group),
                "reached": reached,
                "not_reached": len(group) - reached,
            }
        return shown

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "effective_on": self.effective_on.isoformat(),
            "is_material": self.is_material,
            "published_at": self.published_at.isoformat(),
            "published_by": self.published_by,
            "campaign_id": self.campaign_id,
            "campaign_status": self.campaign_status,
            "launched_at": self.launched_at.isoformat() if self.launched_at else None,
            "is_finished": self.is_finished,
            "is_planning": self.is_planning,
            "eligible_clients": len(self.clients),
            "reached_clients": len(self.reached),
            "not_reached_clients": len(self.not_reached),
            "clients_by_status": self.by_client_status(),
            "contacts": self.contacts,
            "not_reached": [c.as_dict() for c in self.not_reached],
            "clients": [c.as_dict() for c in self.clients],
        }


def policy_agreement_eligible(today: dt.date, grace_days: int | None) -> ColumnElement[bool]:
    """A client organization (any, whose information is held, when `grace_days` is None), or one
    whose agreement is active on `today` or ended less than `grace_days` before."""
    is_client = Organization.kind == OrganizationKind.CLIENT.value
    if grace_days is None:
        return is_client
    ended = Organization.__table__.c.agreement_ended_on
    grace_start = today - dt.timedelta(days=grace_days)
    return and_(
        Organization.kind == OrganizationKind.CLIENT.value,
        or_(agreement_active(today), and_(agreement_ended(today), ended > grace_start)),
    )


def eligible_organization_ids(campaign: Campaign, grace_days: int | None) -> Any:
    """A SELECT of the ids of the organizations the notice campaign was for (see module doc)."""
    planned = select(Send.organization_id).where(
        Send.campaign_id == campaign.id,
        Send.organization_id.is_not(None),
        not_(and_(Send.status == SendStatus.SKIPPED.value, Send.skip_reason.in_(ORG_LEVEL_SKIPS))),
    )
    launched = campaign.launched_at or campaign.created_at
    existing = select(Organization.id).where(
        Organization.created_at <= launched,
        policy_agreement_eligible(launched.date(), grace_days),
    )
    return planned.union(existing)


def _send_class(status: Any, skip_reason: Any, suppression_id: Any) -> ColumnElement[str]:
    return case(
        (status == SendStatus.SENT.value, literal("sent")),
        (status.in_(PENDING), literal("pending")),
        (
            and_(status == SendStatus.SKIPPED.value, skip_reason == SkipReason.SUPPRESSED.value),
            literal("undeliverable"),
        ),
        (
            and_(status == SendStatus.FAILED.value, suppression_id.is_not(None)),
            literal("undeliverable"),
        ),
        (status.in_((SendStatus.FAILED.value, SendStatus.UNKNOWN.value)), literal("failed")),
        else_=literal("skipped"),
    )


def _not_yet_planned(
    session: Session, campaign: Campaign, grace_days: int | None, now: dt.datetime
) -> Select[Any]:
    """Organization and class of each row the unfinished plan has still to write.

    The rows the planner itself will write (`planned_rows`, after the contact planned last;
    it never writes organization-level skips): queued ones count as pending, skipped ones as
    they will be once written.
    """
    assert campaign.planned_through is not None
    rest = planned_rows(
        session,
        campaign,
        campaign.rule_text,
        now=now,
        policy_grace_days=grace_days,
        after_contact_id=campaign.planned_through,
    ).subquery()
    cls = _send_class(rest.c.status, rest.c.skip_reason, null())
    return select(rest.c.organization_id.label("org_id"), cls.label("cls"))


def campaign_coverage(
    session: Session, campaign: Campaign, grace_days: int | None, *, now: dt.datetime
) -> list[ClientCoverage]:
    """Every eligible client of the notice campaign, with its contacts counted by class.

    While the plan is unfinished (`planned_through` set), the contacts it has still to write
    are counted too, as the planner will write them: a client is never "no contacts" only
    because its turn has not come yet.
    """
    eligible = eligible_organization_ids(campaign, grace_days).subquery()
    launched = (campaign.launched_at or campaign.created_at).date()
    orgs = session.execute(
        select(
            Organization.id,
            Organization.external_id,
            Organization.name,
            User.display_name,
            agreement_active(launched),
        )
        .outerjoin(User, User.id == Organization.account_manager_id)
        .where(Organization.id.in_(select(eligible.c.organization_id)))
        .order_by(Organization.external_id)
    )
    clients = {
        org_id: ClientCoverage(org_id, external_id, name, manager or "", bool(is_active))
        for org_id, external_id, name, manager, is_active in orgs
    }
    # classify in a subquery and group on its column: PostgreSQL refuses to match a CASE with
    # bound literals in GROUP BY to the same CASE in the select list
    cls = _send_class(Send.status, Send.skip_reason, Suppression.id)
    classified: Any = (
        select(Send.organization_id.label("org_id"), cls.label("cls"))
        .select_from(Send)
        .outerjoin(Contact, Contact.id == Send.contact_id)
        .outerjoin(Suppression, Suppression.address_hash == Contact.address_hash)
        .where(
            Send.campaign_id == campaign.id,
            not_(
                and_(
                    Send.status == SendStatus.SKIPPED.value,
                    Send.skip_reason.in_(ORG_LEVEL_SKIPS),
                )
            ),
        )
    )
    if campaign.planned_through is not None:
        classified = classified.union_all(_not_yet_planned(session, campaign, grace_days, now))
    classified = classified.subquery()
    counts = session.execute(
        select(classified.c.org_id, classified.c.cls, func.count()).group_by(
            classified.c.org_id, classified.c.cls
        )
    )
    for org_id, cls, n in counts:
        client = clients.get(org_id)
        if client is not None:  # None: the organization was deleted since
            setattr(client, cls, getattr(client, cls) + n)
    return list(clients.values())


def require_version(session: Session, version: str) -> PolicyVersion:
    found = get_version(session, version)
    if found is None:
        raise NotFoundError(f"no policy version {version!r}; `mailer policy list` shows them")
    return found


def coverage(rt: Runtime, version: str, *, actor: Actor) -> CoverageReport:
    """Per eligible client, how the notice of `version` fared (admins only; audited).

    A version that was not material has no notice: its report lists no clients.
    """
    with rt.sessions.begin() as session:
        require(
            session,
            actor,
            "policy.coverage",
            object_type="policy_version",
            object_id=version,
            reason="only an admin may read a policy coverage report",
        )
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
            report.is_planning = campaign.planned_through is not None
            report.clients = campaign_coverage(
                session, campaign, rt.settings.policy_grace_days, now=utcnow()
            )
        # the report names clients and their account managers: an export, so audited
        access_audit(
            session,
            actor,
            "policy.coverage",
            object_type="policy_version",
            object_id=version,
            eligible_clients=len(report.clients),
            not_reached_clients=len(report.not_reached),
        )
    return report
