"""Recording what happened to a send after its SMTP reply, once per event.

`record_event` writes a `DeliveryEvent` keyed by (source, event key): the same report or the
same provider event arriving twice is taken once (`False` the second time). Complaints are
counted from these rows for the campaign's complaint rate.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from mailer.db import insert_ignoring_duplicates
from mailer.models import DeliveryEvent

#: The kinds of event, as stored.
KINDS = ("delivered", "soft_bounce", "hard_bounce", "complaint", "unsubscribe", "other")


def record_event(
    session: Session,
    *,
    source: str,
    event_key: str,
    kind: str,
    send_id: int | None,
    campaign_id: int | None,
    now: dt.datetime,
    detail: str = "",
) -> bool:
    """Record one event unless it was recorded before; True if it is new."""
    if kind not in KINDS:
        raise ValueError(f"unknown delivery event kind {kind!r}; one of {', '.join(KINDS)}")
    key = event_key[:200]
    seen = session.scalar(
        select(DeliveryEvent.id).where(
            DeliveryEvent.source == source, DeliveryEvent.event_key == key
        )
    )
    if seen is not None:
        return False
    table = cast(Table, DeliveryEvent.__table__)
    insert_ignoring_duplicates(
        session,
        table,
        [
            {
                "source": source,
                "event_key": key,
                "kind": kind,
                "send_id": send_id,
                "campaign_id": campaign_id,
                "at": now,
                "detail": detail[:2000],
            }
        ],
    )
    # a concurrent twin may have won the insert: only the row that is ours counts
    mine = session.scalar(
        select(DeliveryEvent.id).where(
            DeliveryEvent.source == source,
            DeliveryEvent.event_key == key,
            DeliveryEvent.at == now,
            DeliveryEvent.kind == kind,
        )
    )
    return mine is not None
