"""Batches: the unit of work on the broker, a range of send ids of one campaign."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.enums import Category, SendStatus
from mailer.models import Send


@dataclass(frozen=True)
class Batch:
    """Sends `first_id`..`last_id` (inclusive) of one campaign; only queued rows are sent."""

    campaign_id: int
    first_id: int
    last_id: int
    #: Service and policy mail travels on the priority queue.
    is_priority: bool

    def as_args(self) -> tuple[int, int, int]:
        return (self.campaign_id, self.first_id, self.last_id)


#: Enqueues batches on the broker; called after the transaction that made them commits.
Dispatch = Callable[[Sequence[Batch]], None]


def batches_for(
    session: Session,
    campaign_id: int,
    category: Category,
    batch_size: int,
    *,
    touch_at: dt.datetime | None = None,
    stale_before: dt.datetime | None = None,
    after_id: int = 0,
) -> list[Batch]:
    """Cut the campaign's queued sends into id ranges of at most `batch_size` rows.

    With `stale_before`, only queued rows not touched since then count (the sweep's way to
    re-enqueue work whose broker message was lost). With `touch_at`, those rows are marked as
    enqueued at that time.
    """
    query = select(Send.id).where(
        Send.campaign_id == campaign_id, Send.status == SendStatus.QUEUED, Send.id > after_id
    )
    if stale_before is not None:
        query = query.where(Send.updated_at < stale_before)
    ids = list(session.scalars(query.order_by(Send.id)))
    if not ids:
        return []
    if touch_at is not None:
        touched = update(Send).where(
            Send.campaign_id == campaign_id, Send.status == SendStatus.QUEUED
        )
        if stale_before is not None:
            touched = touched.where(Send.updated_at < stale_before)
        session.execute(touched.values(updated_at=touch_at))
    return cut_batches(campaign_id, category, ids, batch_size)


def cut_batches(
    campaign_id: int, category: Category | str, ids: Sequence[int], batch_size: int
) -> list[Batch]:
    """Id ranges of at most `batch_size` of the given ids (ranges may hold other rows too)."""
    ordered = sorted(ids)
    priority = Category(category).is_at_least_once
    return [
        Batch(campaign_id, chunk[0], chunk[-1], priority)
        for chunk in (ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size))
    ]


def dispatch_all(dispatch: Dispatch | None, batches: Sequence[Batch]) -> None:
    if dispatch is not None and batches:
        dispatch(batches)
