"""Per-campaign hard-bounce and complaint rates, and the self-pause when one is too high.

Gmail's and Yahoo's bulk-sender rules hold complaints under 0.3% of delivered mail; a list with
more than a few percent of dead addresses is a stale list. A campaign over either threshold
(`MAILER_COMPLAINT_RATE_LIMIT` after `MAILER_COMPLAINT_RATE_MIN_DELIVERED` deliveries,
`MAILER_HARD_BOUNCE_RATE_LIMIT` after `MAILER_HARD_BOUNCE_RATE_MIN_ATTEMPTS` attempts) pauses
itself through the lifecycle, with the reason, and the operator is alerted once.

Checked by the scheduler's sweep for every sending campaign, and at once for the campaign a
complaint or a bounce report is about.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, func, not_, or_, select
from sqlalchemy.orm import Session

from mailer.alerts import raise_alert
from mailer.campaigns.lifecycle import SYSTEM, transition
from mailer.config import Settings
from mailer.enums import CampaignStatus, SendStatus
from mailer.models import Campaign, DeliveryEvent, Send

#: Send statuses that were tried at least once and settled.
_ATTEMPTED = (SendStatus.SENT, SendStatus.FAILED, SendStatus.UNKNOWN, SendStatus.DEFERRED)


@dataclass(frozen=True)
class CampaignRates:
    delivered: int
    attempts: int
    hard_bounces: int
    complaints: int

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.delivered if self.delivered else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.attempts if self.attempts else 0.0


def campaign_rates(session: Session, campaign_id: int) -> CampaignRates:
    """What a campaign's send log and delivery events say so far."""
    # a hard bounce: a 5xx that is not 5.7.x (ours: authentication or policy), refused at once
    # or bounced later (the inbound path marks the send failed with the reply code)
    is_hard = and_(
        Send.status == SendStatus.FAILED.value,
        Send.smtp_code >= 500,
        Send.smtp_code < 600,
        not_(or_(Send.smtp_reply.like("5.7.%"), Send.smtp_reply.like("bounced later: 5.7.%"))),
    )
    row = session.execute(
        select(
            func.count().filter(Send.status == SendStatus.SENT.value),
            func.count().filter(Send.status.in_([s.value for s in _ATTEMPTED])),
            func.count().filter(is_hard),
        ).where(Send.campaign_id == campaign_id)
    ).one()
    complaints = session.scalar(
        select(func.count(func.distinct(DeliveryEvent.send_id))).where(
            DeliveryEvent.campaign_id == campaign_id, DeliveryEvent.kind == "complaint"
        )
    )
    # a send bounced later was delivered first: it counts as attempted, not as delivered
    return CampaignRates(int(row[0]), int(row[1]), int(row[2]), int(complaints or 0))


def check_rates(session: Session, settings: Settings, campaign_id: int, now: dt.datetime) -> str:
    """Pause a sending campaign whose complaint or hard-bounce rate is over its limit and alert
    once per cause; returns the reason, or "" when the rates are fine."""
    rates = campaign_rates(session, campaign_id)
    reason, kind = "", ""
    if (
        rates.delivered >= settings.complaint_rate_min_delivered
        and rates.complaint_rate > settings.complaint_rate_limit
    ):
        kind = "complaint-rate"
        reason = (
            f"complaint rate {rates.complaint_rate:.2%} ({rates.complaints} of "
            f"{rates.delivered} delivered) is over {settings.complaint_rate_limit:.2%}"
        )
    elif (
        rates.attempts >= settings.hard_bounce_rate_min_attempts
        and rates.hard_bounce_rate > settings.hard_bounce_rate_limit
    ):
        kind = "hard-bounce-rate"
        reason = (
            f"hard-bounce rate {rates.hard_bounce_rate:.2%} ({rates.hard_bounces} of "
            f"{rates.attempts} attempted) is over {settings.hard_bounce_rate_limit:.2%}"
        )
    if not reason:
        return ""
    name = session.scalar(select(Campaign.name).where(Campaign.id == campaign_id)) or "?"
    paused = transition(
        session,
        campaign_id,
        CampaignStatus.PAUSED,
        actor=SYSTEM,
        action="pause",
        sources=(CampaignStatus.SENDING,),
        detail=f"paused: {reason}; clean the audience or find the cause, then resume",
        now=now,
        alerted=True,  # the rate alert below says it; no second "paused itself" alert
        rate=kind,
    )
    raise_alert(
        session,
        key=f"{kind}:{campaign_id}",
        kind=kind,
        subject=f"campaign {campaign_id} ({name}): {reason}",
        body=(
            f"Campaign {campaign_id} ({name}): {reason}.\n"
            + ("It has paused itself. " if paused else "")
            + "Look at its bounces and complaints (mailer campaign status "
            f"{campaign_id}) before resuming or sending to the same audience again."
        ),
        now=now,
        campaign_id=campaign_id,
        delivered=rates.delivered,
        attempts=rates.attempts,
        hard_bounces=rates.hard_bounces,
        complaints=rates.complaints,
        paused=paused,
    )
    return reason
