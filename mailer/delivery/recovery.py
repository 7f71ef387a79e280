"""Taking back sends from workers that stopped: from their journals first, then by lease.

A dead worker's journal says exactly what became of each send it had claimed (see
`mailer.delivery.journal`); only sends no journal speaks for fall back to the lease rule:
at-least-once mail (service, policy) is sent again, marketing mail becomes `unknown`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, literal_column, select, update
from sqlalchemy.orm import Session

from mailer import audit
from mailer.delivery.batches import Batch, cut_batches
from mailer.delivery.journal import Journal, JournalFile, read_journals
from mailer.delivery.transactions import in_transaction
from mailer.enums import Category, SendStatus
from mailer.models import Send
from mailer.runtime import Runtime

_log = logging.getLogger("mailer.delivery")

#: The send log as a Core table, for the bulk statements of the hot path.
_sends = cast(Table, Send.__table__)

#: Send rows changed per transaction: small, so workers never wait long behind one.
CHUNK = 500
#: What the send log says of marketing mail whose worker was lost while sending it.
LOST_REPLY = "worker lost while sending; not resent (marketing mail is sent at most once)"
#: Claims of a live worker are its own until their lease expired this long ago (at least).
LIVE_GRACE_S = 60


@dataclass
class Recovered:
    sent: int = 0  #: accepted before the worker stopped, as its journal says
    requeued: int = 0  #: sent again (never begun, or at-least-once mail)
    unknown: int = 0  #: marketing mail that may or may not have gone out
    batches: list[Batch] = field(default_factory=list)
    stopped_workers: int = 0  #: journals of dead processes found

    def add(self, other: Recovered) -> None:
        self.stopped_workers += other.stopped_workers
        self.sent += other.sent
        self.requeued += other.requeued
        self.unknown += other.unknown
        self.batches.extend(other.batches)


def recover(rt: Runtime, now: dt.datetime) -> Recovered:
    """Settle the journals of dead workers, then expired leases no live journal speaks for."""
    result = Recovered()
    protected: set[int] = set()
    for journal in read_journals(rt.settings.journal_dir):
        if journal.is_owner_alive:
            protected.update(journal.claims)
            continue
        settled, is_done = settle_journal(rt, journal, now)
        result.add(settled)
        result.stopped_workers += 1
        if is_done:
            journal.path.unlink(missing_ok=True)
    result.add(_recover_expired_leases(rt, now, protected))
    return result


def settle_own_journal(rt: Runtime, journal: Journal, now: dt.datetime) -> None:
    """After an error in a batch: settle this thread's open claims, then start the file over."""
    try:
        _, is_done = settle_journal(rt, journal.read(), now)
        if is_done:
            journal.recorded()
    except Exception:
        _log.exception("could not settle the claims in %s; the sweep will", journal.path)


def settle_journal(rt: Runtime, journal: JournalFile, now: dt.datetime) -> tuple[Recovered, bool]:
    """Settle every claim of `journal` still open in the send log; True when none is left."""
    result = Recovered()
    missing = 0
    owner = f"{journal.host}.{journal.pid}"
    by_campaign: dict[tuple[int, str], list[int]] = {}
    for send_id, campaign_id, category in _open_claims(rt, journal):
        by_campaign.setdefault((campaign_id, category), []).append(send_id)
    for (campaign_id, category), ids in by_campaign.items():
        settled = _settle_campaign(rt, journal, campaign_id, category, ids, now)
        missing += len(ids) - settled.sent - settled.requeued - settled.unknown
        result.add(settled)
        in_transaction(
            rt.sessions,
            partial(
                audit.record,
                actor="scheduler",
                action="sends.settled_from_journal",
                object_type="campaign",
                object_id=campaign_id,
                worker=owner,
                count=settled.sent + settled.requeued + settled.unknown,
                sent=settled.sent,
                queued=settled.requeued,
                unknown=settled.unknown,
            ),
            what=f"campaign {campaign_id}: auditing",
        )
    if by_campaign:
        _log.info(
            "settled the claims of stopped worker %s: %d sent, %d queued again, %d unknown",
            owner,
            result.sent,
            result.requeued,
            result.unknown,
        )
    return result, missing == 0


def _settle_campaign(
    rt: Runtime,
    journal: JournalFile,
    campaign_id: int,
    category: str,
    ids: list[int],
    now: dt.datetime,
) -> Recovered:
    """accepted → sent; never begun or refused → queued; begun, no answer → the lease rule."""
    result = Recovered()
    sent = [i for i in ids if i in journal.accepted]
    lost = [i for i in ids if i in journal.begun and i not in journal.refused and i not in sent]
    again = [i for i in ids if i not in journal.accepted and i not in lost]
    owner = f"{journal.host}.{journal.pid}"
    result.sent += len(
        _move_claimed(
            rt,
            sent,
            journal.claims,
            SendStatus.SENT,
            now,
            extra={
                "sent_at": now,
                "smtp_code": 250,
                "smtp_reply": f"accepted; recorded from the journal of worker {owner}",
            },
        )
    )
    changed = _move_claimed(rt, again, journal.claims, SendStatus.QUEUED, now)
    result.requeued += len(changed)
    result.batches.extend(cut_batches(campaign_id, category, changed, rt.settings.batch_size))
    result.add(_lose(rt, campaign_id, category, lost, now, journal.claims, is_audited=False))
    return result


def _open_claims(rt: Runtime, journal: JournalFile) -> list[tuple[int, int, str]]:
    """(send id, campaign id, category) of the journal's claims still `sending` under it."""
    ids = sorted(journal.claims)
    found: list[tuple[int, int, str]] = []
    with rt.sessions() as session:
        for start in range(0, len(ids), 1000):
            rows = session.execute(
                select(Send.id, Send.campaign_id, Send.category, Send.attempts).where(
                    Send.id.in_(ids[start : start + 1000]),
                    Send.status == literal_column("'sending'"),
                )
            )
            found.extend(
                (row.id, row.campaign_id, row.category)
                for row in rows
                if journal.claims.get(row.id) == row.attempts
            )
    return found


def _lose(
    rt: Runtime,
    campaign_id: int,
    category: str,
    ids: list[int],
    now: dt.datetime,
    attempts: Mapping[int, int] | None = None,
    only_if: Sequence[ColumnElement[bool]] = (),
    *,
    is_audited: bool = True,
) -> Recovered:
    """The lease rule: at-least-once mail is sent again, marketing mail becomes unknown."""
    result = Recovered()
    at_least_once = Category(category).is_at_least_once
    target = SendStatus.QUEUED if at_least_once else SendStatus.UNKNOWN
    reply = {} if at_least_once else {"smtp_reply": LOST_REPLY}
    if attempts is None:
        changed = move_sends(rt, ids, SendStatus.SENDING, target, now, only_if=only_if, extra=reply)
    else:
        changed = _move_claimed(rt, ids, attempts, target, now, extra=reply)
    if at_least_once:
        result.requeued += len(changed)
        result.batches.extend(cut_batches(campaign_id, category, changed, rt.settings.batch_size))
    else:
        result.unknown += len(changed)
    if changed and is_audited:
        in_transaction(
            rt.sessions,
            partial(
                audit.record,
                actor="scheduler",
                action="sends.lease_expired",
                object_type="campaign",
                object_id=campaign_id,
                count=len(changed),
                now_status=target.value,
            ),
            what=f"campaign {campaign_id}: auditing",
        )
    return result


def _recover_expired_leases(rt: Runtime, now: dt.datetime, protected: set[int]) -> Recovered:
    """Sends whose lease ran out and that no live worker's journal claims."""
    result = Recovered()
    grace = now - dt.timedelta(seconds=max(rt.settings.lease_s, LIVE_GRACE_S))
    with rt.sessions() as session:
        expired = [
            (row.campaign_id, row.category, row.id)
            for row in session.execute(
                select(Send.id, Send.campaign_id, Send.category, Send.lease_expires_at).where(
                    Send.status == literal_column("'sending'"), Send.lease_expires_at < now
                )
            )
            # a live worker still owns its claims, unless it has overstayed even the grace
            if row.id not in protected or _aware(row.lease_expires_at) < grace
        ]
    for (campaign_id, category), ids in _group(expired).items():
        result.add(
            _lose(rt, campaign_id, category, ids, now, only_if=(_sends.c.lease_expires_at < now,))
        )
    return result


def _move_claimed(
    rt: Runtime,
    ids: Iterable[int],
    attempts: Mapping[int, int],
    target: SendStatus,
    now: dt.datetime,
    *,
    extra: Mapping[str, object] | None = None,
) -> list[int]:
    """`sending` → `target` for those of `ids` still under the journalled claim (attempts)."""
    by_attempts: dict[int, list[int]] = {}
    for send_id in ids:
        by_attempts.setdefault(attempts[send_id], []).append(send_id)
    changed: list[int] = []
    for count, group in sorted(by_attempts.items()):
        changed.extend(
            move_sends(
                rt,
                group,
                SendStatus.SENDING,
                target,
                now,
                only_if=(_sends.c.attempts == count,),
                extra=extra,
            )
        )
    return changed


def move_sends(
    rt: Runtime,
    ids: Sequence[int],
    source: SendStatus,
    target: SendStatus,
    now: dt.datetime,
    *,
    only_if: Sequence[ColumnElement[bool]] = (),
    extra: Mapping[str, object] | None = None,
) -> list[int]:
    """`source` → `target` for those of `ids` still in `source` (and matching `only_if`).

    In id order, one transaction per chunk of `CHUNK`; rows locked by a worker right now are
    left for the next sweep (PostgreSQL `FOR UPDATE SKIP LOCKED`). Returns the ids changed.
    """
    values: dict[str, object] = {
        "status": target.value,
        "lease_expires_at": None,
        "updated_at": now,
        "next_attempt_at": None,
    }
    values.update(extra or {})
    ordered = sorted(ids)
    changed: list[int] = []
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        free = (
            select(_sends.c.id)
            .where(_sends.c.id.in_(chunk), _sends.c.status == source.value, *only_if)
            .order_by(_sends.c.id)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(_sends)
            .where(_sends.c.id.in_(free.scalar_subquery()), _sends.c.status == source.value)
            .values(**values)
            .returning(_sends.c.id)
        )
        changed.extend(
            in_transaction(
                rt.sessions,
                partial(_changed_ids, stmt=stmt),
                what=f"sends {source.value} -> {target.value}",
            )
        )
    return changed


def _changed_ids(session: Session, *, stmt: Any) -> list[int]:
    return list(session.scalars(stmt))


def _group(rows: Iterable[tuple[int, str, int]]) -> dict[tuple[int, str], list[int]]:
    grouped: dict[tuple[int, str], list[int]] = {}
    for campaign_id, category, send_id in rows:
        grouped.setdefault((campaign_id, category), []).append(send_id)
    return grouped


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
