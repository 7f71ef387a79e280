"""Waiting for a campaign to finish, for scripts: completed, or why not."""

from __future__ import annotations

import time
from collections.abc import Callable

from mailer.campaigns.summary import CampaignSummary, campaign_status
from mailer.enums import CampaignStatus
from mailer.errors import CampaignNotCompletedError
from mailer.runtime import Runtime

#: Seconds between two looks at the campaign.
POLL_S = 0.5


def wait_for_campaign(
    rt: Runtime,
    campaign_id: int,
    *,
    timeout_s: float | None = None,
    poll_s: float = POLL_S,
    on_progress: Callable[[CampaignSummary], None] | None = None,
) -> CampaignSummary:
    """Return the campaign once completed; raise CampaignNotCompletedError saying why not.

    A scheduled, sending or paused campaign is waited for (a paused one may be resumed);
    `timeout_s=None` waits for as long as it takes.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        summary = campaign_status(rt, campaign_id)
        if on_progress is not None:
            on_progress(summary)
        if summary.status == CampaignStatus.COMPLETED:
            return summary
        _refuse_final(summary)
        if deadline is not None and time.monotonic() >= deadline:
            raise CampaignNotCompletedError(
                campaign_id,
                "timeout",
                f"campaign {campaign_id} is still {summary.status} after {timeout_s:g} s "
                f"({summary.done} of {summary.total} sends done); wait longer (--timeout), or "
                f"see `mailer campaign status {campaign_id}`",
            )
        left = poll_s if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(poll_s, left)))


def _refuse_final(summary: CampaignSummary) -> None:
    cid, detail = summary.id, summary.status_detail
    because = f": {detail}" if detail else ""
    if summary.status == CampaignStatus.CANCELLED:
        raise CampaignNotCompletedError(cid, "cancelled", f"campaign {cid} was cancelled{because}")
    if summary.status == CampaignStatus.FAILED:
        raise CampaignNotCompletedError(cid, "failed", f"campaign {cid} failed{because}")
    if summary.status == CampaignStatus.MISSED:
        detail = detail or "missed its start; launch it again to send"
        raise CampaignNotCompletedError(cid, "missed", f"campaign {cid} {detail}")
    if summary.status == CampaignStatus.DRAFT:
        raise CampaignNotCompletedError(
            cid,
            "draft",
            f"campaign {cid} is a draft, never launched: `mailer campaign launch {cid}` first",
        )
