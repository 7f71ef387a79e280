"""The campaign lifecycle: the allowed transitions and the one function that performs them.

```
draft ──launch──► sending ──(last outstanding send recorded)──► completed
  │                ▲  │ ▲                                          │
  │          resume│  │pause (by a person, or after too many       │ policy resend
  │                │  ▼ │  sender-side 5.7.x rejections)           │ reopens a notice
  │               paused                                           ▼
  └─launch --at─► scheduled ──(time comes: the scheduler launches)──► sending
                     ├──(start window missed)──► missed ──launch──► sending
                     └──(cannot start: template or audience gone)──► failed ──launch──► sending
any of draft, scheduled, missed, failed, sending, paused ──cancel──► cancelled
```

`transition()` is the only code that writes `Campaign.status` (a test holds the source tree to
that). It is a compare-and-set: a conditional UPDATE that moves the campaign only from the state
it was read in, so two workers finishing together complete a campaign once, and a pause racing
the last send either wins or finds the campaign completed. Every move is audited in the same
transaction, naming who moved it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from mailer.access import SYSTEM, Actor, audit
from mailer.db import index_scans_only, rows_changed
from mailer.enums import CampaignStatus, Role, SendStatus
from mailer.errors import CampaignError, NotFoundError
from mailer.models import Campaign, Send, utcnow

_S = CampaignStatus

#: Where a campaign may go from each state. A state missing on the right is final.
TRANSITIONS: Mapping[CampaignStatus, frozenset[CampaignStatus]] = {
    _S.DRAFT: frozenset({_S.SCHEDULED, _S.SENDING, _S.CANCELLED}),
    _S.SCHEDULED: frozenset({_S.SCHEDULED, _S.SENDING, _S.MISSED, _S.FAILED, _S.CANCELLED}),
    _S.MISSED: frozenset({_S.SCHEDULED, _S.SENDING, _S.CANCELLED}),
    _S.FAILED: frozenset({_S.SCHEDULED, _S.SENDING, _S.CANCELLED}),
    _S.SENDING: frozenset({_S.PAUSED, _S.COMPLETED, _S.CANCELLED}),
    _S.PAUSED: frozenset({_S.SENDING, _S.CANCELLED}),
    _S.COMPLETED: frozenset({_S.SENDING}),  # only a policy resend reopens a notice
    _S.CANCELLED: frozenset(),
}
#: States a launch starts from (to send now, or to schedule).
LAUNCHABLE = (_S.DRAFT, _S.SCHEDULED, _S.MISSED, _S.FAILED)
#: States in which a campaign is still open (cancel applies).
OPEN = tuple(s for s, targets in TRANSITIONS.items() if _S.CANCELLED in targets)
#: Send statuses still on their way: while any is left, a campaign is not complete.
OUTSTANDING = (SendStatus.QUEUED, SendStatus.SENDING, SendStatus.DEFERRED)
#: The scheduler's sweep, as the audit log names it (the service itself acts as `SYSTEM`).
SCHEDULER = Actor(user_id=None, username="scheduler", role=Role.ADMIN, via="system")


def sources_of(target: CampaignStatus) -> tuple[CampaignStatus, ...]:
    """Every state from which `target` may be reached."""
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)


def transition(
    session: Session,
    campaign_id: int,
    target: CampaignStatus,
    *,
    actor: Actor,
    action: str,
    detail: str = "",
    sources: Iterable[CampaignStatus] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    values: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
    **audit_details: Any,
) -> bool:
    """Move a campaign to `target` if it is in an allowed source state; True if it moved.

    `sources` narrows the table's sources (a resume moves only a paused campaign to sending);
    `where` adds conditions on the campaign row; `values` sets other columns in the same UPDATE.
    The change is audited as `campaign.<action>` by `actor`, with the state it came from.
    Runs in the caller's transaction; the caller commits.
    """
    allowed = set(sources_of(target))
    if sources is not None:
        narrowed = set(sources)
        if not narrowed <= allowed:
            wrong = ", ".join(sorted(narrowed - allowed))
            raise ValueError(f"{wrong} → {target} is not in the lifecycle table")
        allowed = narrowed
    now = now or utcnow()
    while True:
        current = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        if current is None or current not in allowed:
            return False
        moved = rows_changed(
            session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.status == current, *where)
                .values(status=target.value, status_detail=detail, updated_at=now, **(values or {}))
                .execution_options(synchronize_session=False)
            )
        )
        if moved:
            break
        # someone else moved it between the read and the write: look again (or, if an extra
        # `where` failed, the state is unchanged and the move is simply not possible now)
        if session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)) == current:
            return False
    loaded = session.identity_map.get(identity_key(Campaign, campaign_id))
    if loaded is not None:
        session.expire(loaded)
    details = {"from": current, "to": target.value, **audit_details}
    if detail:
        details["detail"] = detail
    name = f"campaign.{action}"
    audit(session, actor, name, object_type="campaign", object_id=campaign_id, **details)
    return True


def require_transition(
    session: Session,
    campaign_id: int,
    target: CampaignStatus,
    *,
    actor: Actor,
    action: str,
    sources: Iterable[CampaignStatus] | None = None,
    **kw: Any,
) -> None:
    """`transition`, raising a CampaignError that says why when the campaign cannot move."""
    sources = tuple(sources) if sources is not None else sources_of(target)
    if transition(session, campaign_id, target, actor=actor, action=action, sources=sources, **kw):
        return
    current = session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if current is None:
        raise NotFoundError(f"no campaign {campaign_id}; `mailer campaign list` shows them")
    needs = ", ".join(sources)
    raise CampaignError(f"cannot {action} campaign {campaign_id}: it is {current} (needs {needs})")


def has_outstanding_sends(session: Session, campaign_id: int) -> bool:
    query = select(Send.id).where(Send.campaign_id == campaign_id, Send.status.in_(OUTSTANDING))
    # Asked at the end of every batch. The statistics of a running campaign are stale (taken
    # when every row was queued), so PostgreSQL would read the whole table from the start,
    # where the rows are long done, to find one outstanding row (~50-100 ms at 100,000 sends);
    # the index on (campaign_id, status) answers in well under a millisecond.
    with index_scans_only(session):
        return session.execute(query.limit(1)).first() is not None


def complete_if_done(
    session: Session,
    campaign_id: int,
    *,
    actor: Actor = SYSTEM,
    now: dt.datetime | None = None,
    detail: str = "",
) -> bool:
    """Complete a sending campaign with nothing queued, sending or deferred; True if it did.

    Call it in a transaction begun AFTER the caller's own writes committed (recording the last
    sends, resuming, finishing the plan): then of two workers recording their last sends at
    once, the one that commits second sees the other's rows done, so one of them always
    completes the campaign, and the compare-and-set makes sure only one does.
    """
    if has_outstanding_sends(session, campaign_id):
        return False
    now = now or utcnow()
    return transition(
        session,
        campaign_id,
        CampaignStatus.COMPLETED,
        actor=actor,
        action="complete",
        detail=detail,
        # not while the rest of a two-step plan is still being written
        where=(Campaign.planned_through.is_(None),),
        values={"completed_at": now},
        now=now,
        counts=send_counts(session, campaign_id),
    )


def send_counts(session: Session, campaign_id: int) -> dict[str, int]:
    """How many sends of the campaign are in each status."""
    rows = session.execute(
        select(Send.status, func.count())
        .where(Send.campaign_id == campaign_id)
        .group_by(Send.status)
    )
    return {status: n for status, n in rows}
