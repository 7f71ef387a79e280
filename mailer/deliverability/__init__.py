"""Deliverability: soft-bounce counting, per-campaign bounce and complaint rates, provider events.

- `soft`: soft bounces counted per address; enough of them, over long enough with no delivery
  in between, stop the address's marketing mail (an admin can lift that).
- `rates`: a campaign's hard-bounce and complaint rates, and the self-pause when either is too
  high (the thresholds are settings).
- `events`: what a provider's webhook reports (delivered, bounced, complained, unsubscribed),
  applied idempotently on the same paths as `mailer inbound`.
"""

from mailer.deliverability.rates import CampaignRates, campaign_rates, check_rates
from mailer.deliverability.soft import (
    all_suppressions,
    lift_marketing_suppression,
    marketing_suppressions,
    note_delivered,
    note_soft_bounce,
)

__all__ = [
    "CampaignRates",
    "all_suppressions",
    "campaign_rates",
    "check_rates",
    "lift_marketing_suppression",
    "marketing_suppressions",
    "note_delivered",
    "note_soft_bounce",
]
