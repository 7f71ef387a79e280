"""Launch: the one way a campaign starts sending, for the CLI, the web app, the scheduler and
policy publishing alike.

1. validate: the template loads and is of the campaign's category; the saved audience exists;
   the rule parses (a campaign that fails stays where it was, nothing planned);
2. move the campaign to `sending` (compare-and-set: two clicks or two schedulers launch once),
   pin the stored template version it sends (if any) and write its snapshot (subject,
   sources, a rendered sample), and plan the first chunk of the send log, all in the caller's
   transaction;
3. after the commit, dispatch those batches, so the first message leaves within a second;
4. plan the rest and dispatch it (`finish_planning`); a launcher that dies before this step is
   covered by the sweep, which plans the rest of any campaign left half planned.

A campaign with nobody to send to completes at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailer.access import Actor, audit
from mailer.campaigns.lifecycle import (
    LAUNCHABLE,
    complete_if_done,
    require_transition,
    send_counts,
)
from mailer.campaigns.rights import require_campaign_right
from mailer.campaigns.summary import CampaignSummary, campaign_status, get_campaign, summarize
from mailer.campaigns.times import format_time
from mailer.delivery.batches import Batch, Dispatch, dispatch_all
from mailer.delivery.identities import sender_for
from mailer.delivery.planning import finish_planning, plan_send_log
from mailer.enums import CampaignStatus, Category
from mailer.errors import CampaignError
from mailer.messages import Template, check_params
from mailer.models import Campaign, utcnow
from mailer.rules import get_audience, parse_rule
from mailer.runtime import Runtime
from mailer.template_store import (
    ChosenSource,
    campaign_source,
    check_chosen,
    choose_source,
    pin_and_snapshot,
)

#: Contacts (the first so many by id) planned before the first batches go out; the rest is
#: planned while they are sent, so the first message leaves well under a second after launch
#: whatever the audience size.
FIRST_CHUNK_ROWS = 1000


@dataclass
class Launch:
    """A launch begun in a transaction: its first batches, to go out once that commits."""

    campaign_id: int
    batches: list[Batch]
    #: Only the first chunk is planned; `proceed` plans the rest.
    is_partial: bool

    def proceed(self, rt: Runtime, dispatch: Dispatch | None) -> list[Batch]:
        """After the commit: dispatch the first batches, plan and dispatch the rest.

        Returns every batch; with `dispatch=None` the caller enqueues them itself.
        """
        dispatch_all(dispatch, self.batches)
        if not self.is_partial:
            return list(self.batches)
        return self.batches + finish_planning(rt, self.campaign_id, dispatch=dispatch)


def begin_launch(
    rt: Runtime,
    session: Session,
    campaign: Campaign,
    *,
    actor: Actor,
    now: dt.datetime,
    **audit_details: object,
) -> Launch:
    """Validate, move the campaign to sending and plan its first chunk in `session`.

    The caller commits, then calls `Launch.proceed`. Raises (and moves nothing) when the
    template or the audience is not usable, or the campaign is not in a launchable state.
    """
    rule_text, chosen, template = _validate(
        rt,
        Category(campaign.category),
        campaign.template,
        campaign.audience,
        campaign.rule_text,
        campaign.params or {},
        session=session,
        subject=campaign.subject or "",
        campaign=campaign,
    )
    require_transition(
        session,
        campaign.id,
        CampaignStatus.SENDING,
        actor=actor,
        action="launch",
        sources=LAUNCHABLE,
        values={"launched_at": now, "rule_text": rule_text},
        now=now,
        rule=rule_text,
        **audit_details,
    )
    session.refresh(campaign)
    # what it sends, pinned and kept in the same transaction as the launch itself
    sender = sender_for(session, rt.settings, campaign.category, campaign.sender_username)
    pin_and_snapshot(session, rt.settings, campaign, chosen, template, sender)
    batches = plan_send_log(rt, session, campaign, rule_text, now=now, first_chunk=FIRST_CHUNK_ROWS)
    audit(
        session,
        actor,
        "campaign.plan",
        object_type="campaign",
        object_id=campaign.id,
        batches=len(batches),
        counts=send_counts(session, campaign.id),
        partial=campaign.planned_through is not None,
    )
    if not batches:
        complete_if_done(session, campaign.id, actor=actor, now=now, detail="nobody to send to")
    return Launch(campaign.id, batches, is_partial=campaign.planned_through is not None)


def launch_campaign(
    rt: Runtime,
    campaign_id: int,
    *,
    actor: Actor,
    dispatch: Dispatch | None,
    at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> CampaignSummary:
    """Launch a campaign now, or schedule it for `at`; the whole of it, for any front end.

    Checks that `actor` may launch it (owner or admin, role allowed for the category).
    A time `at` already past is refused rather than taken to mean "now".
    """
    now = now or utcnow()
    if at is not None and at <= now:
        tz = rt.settings.timezone
        raise CampaignError(
            f"the launch time {format_time(at, tz)} is in the past (it is now "
            f"{format_time(now, tz)}); give a later time, or launch it right away with "
            f"`mailer campaign launch {campaign_id} --now`"
        )
    with rt.sessions.begin() as session:
        campaign = get_campaign(session, campaign_id)
        category = Category(campaign.category)
        require_campaign_right(session, actor, "launch", category=category, campaign=campaign)
        if campaign.status not in LAUNCHABLE:
            raise CampaignError(
                f"campaign {campaign_id} is {campaign.status}; only a draft, scheduled, missed "
                "or failed campaign can be launched"
            )
        if at is not None:
            validate_launch(
                rt,
                Category(campaign.category),
                campaign.template,
                campaign.audience,
                campaign.rule_text,
                campaign.params or {},
                session=session,
                subject=campaign.subject or "",
                campaign=campaign,
            )
            require_transition(
                session,
                campaign_id,
                CampaignStatus.SCHEDULED,
                actor=actor,
                action="schedule",
                values={"scheduled_at": at},
                now=now,
                at=at.isoformat(),
            )
            return summarize(session, get_campaign(session, campaign_id))
        begun = begin_launch(rt, session, campaign, actor=actor, now=now)
        # as planned, before any worker gets the batches
        summary = summarize(session, get_campaign(session, campaign_id))
    begun.proceed(rt, dispatch)
    # a two-step plan: the total is known only now
    return campaign_status(rt, campaign_id) if begun.is_partial else summary


def validate_launch(
    rt: Runtime,
    category: Category,
    template: str,
    audience: str,
    rule_text: str,
    params: Mapping[str, object] | None = None,
    *,
    session: Session | None = None,
    subject: str = "",
    campaign: Campaign | None = None,
) -> str:
    """Check template, campaign parameters (when given) and audience; return the rule text.

    With a `session`, `template` may name a stored template (its latest version is checked);
    `subject` is the campaign's own subject, checked like the template's. With `campaign`
    (and a session) its stored template or pinned version is checked (`campaign_source`)."""
    return _validate(
        rt,
        category,
        template,
        audience,
        rule_text,
        params,
        session=session,
        subject=subject,
        campaign=campaign,
    )[0]


def _validate(
    rt: Runtime,
    category: Category,
    template: str,
    audience: str,
    rule_text: str,
    params: Mapping[str, object] | None,
    *,
    session: Session | None,
    subject: str,
    campaign: Campaign | None = None,
) -> tuple[str, ChosenSource, Template]:
    if campaign is not None and session is not None:
        chosen = campaign_source(session, rt.settings, campaign)
    else:
        chosen = choose_source(session, rt.settings, template)
    loaded = check_chosen(rt.settings, chosen, subject=subject)
    if loaded.category != category:
        raise CampaignError(
            f"template {template!r} is a {loaded.category} template; this is a {category} "
            "campaign: pick a template from templates/" + str(category)
        )
    if params is not None:
        check_params(loaded, params)
    if audience:
        rule_text = get_audience(rt.settings.audiences_dir, audience).rule_text
    if rule_text.strip():
        parse_rule(rule_text, source=f"audience {audience}" if audience else "rule")
    return rule_text, chosen, loaded
