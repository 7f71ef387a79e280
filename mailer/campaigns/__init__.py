"""Campaigns: their lifecycle, launch, and what people do to them.

- `lifecycle`: the table of allowed transitions and `transition()`, the only writer of a
  campaign's status; `complete_if_done`, called by whoever records a campaign's last send;
- `launch`: the one launch (validate, plan the first chunk, dispatch, plan the rest) for the
  CLI, the web app, the scheduler and policy publishing;
- `operations`: create, pause, resume, cancel;
- `summary`: a campaign's state and counts.
"""

from mailer.campaigns.launch import Launch, begin_launch, launch_campaign, validate_launch
from mailer.campaigns.lifecycle import (
    LAUNCHABLE,
    OPEN,
    TRANSITIONS,
    complete_if_done,
    require_transition,
    send_counts,
    transition,
)
from mailer.campaigns.operations import (
    add_draft,
    cancel_campaign,
    change_campaign,
    create_campaign,
    edit_draft,
    pause_campaign,
    resume_campaign,
)
from mailer.campaigns.summary import (
    CampaignSummary,
    campaign_status,
    get_campaign,
    list_campaigns,
    summarize,
)

__all__ = [
    "LAUNCHABLE",
    "OPEN",
    "TRANSITIONS",
    "CampaignSummary",
    "Launch",
    "add_draft",
    "begin_launch",
    "campaign_status",
    "cancel_campaign",
    "change_campaign",
    "complete_if_done",
    "create_campaign",
    "edit_draft",
    "get_campaign",
    "launch_campaign",
    "list_campaigns",
    "pause_campaign",
    "require_transition",
    "resume_campaign",
    "send_counts",
    "summarize",
    "transition",
    "validate_launch",
]
