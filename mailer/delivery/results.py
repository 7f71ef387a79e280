"""Recording delivery results in batched writes: sent, deferred, failed, suppressed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.db import insert_ignoring_duplicates, pg_array, pipelined
from mailer.deliverability import soft as soft_bounces
from mailer.enums import SendStatus, SuppressionReason
from mailer.models import Send, Suppression
from mailer.outgoing import DeliveryResult, Outcome, ReplyKind

#: The send log as a Core table, for the bulk statements of the hot path.
_sends = cast(Table, Send.__table__)

#: One statement for every outcome, run as executemany: a batch costs one round trip.
_RECORD = (
    update(_sends)
    .where(
        _sends.c.id == bindparam("b_id"),
        _sends.c.status == SendStatus.SENDING.value,
        # still this claim's row: after a lease expired and the row was claimed again, the
        # later claim's results are the ones that count
        _sends.c.attempts == bindparam("b_att"),
    )
    .values(
        status=bindparam("b_status"),
        skip_reason=bindparam("b_skip"),
        smtp_code=bindparam("b_code"),
        smtp_reply=bindparam("b_reply"),
        message_id=bindparam("b_mid"),
        sent_at=bindparam("b_sent_at", type_=Send.sent_at.type),
        next_attempt_at=bindparam("b_next", type_=Send.next_attempt_at.type),
        lease_expires_at=None,
        updated_at=bindparam("b_now", type_=Send.updated_at.type),
    )
)


#: Why a marketing message whose fate is unknown stays so.
NOT_RESENT = "not resent (marketing mail is sent at most once)"


@dataclass(frozen=True)
class Claimed:
    """What the claim learned about a send row, needed to decide on a retry."""

    attempts: int
    first_attempt_at: dt.datetime
    email: str
    #: The address may have a soft-bounce count for a delivery to reset (when the claim does
    #: not know, it is True and the recording looks).
    is_soft_counted: bool = True


@dataclass
class RecordReport:
    counts: dict[str, int] = field(default_factory=dict)
    policy_failures: int = 0
    suppressed: int = 0


def retry_delay_s(settings: Settings, attempts: int) -> int:
    """Delay before the next try after `attempts` tries; the last configured delay repeats."""
    delays = settings.retry_delays_s
    return delays[min(max(attempts, 1), len(delays)) - 1]


def _row(
    send_id: int,
    attempts: int,
    status: SendStatus,
    now: dt.datetime,
    *,
    code: int | None = None,
    reply: str = "",
    mid: str = "",
    skip: str = "",
    is_sent: bool = False,
    next_at: dt.datetime | None = None,
) -> dict[str, Any]:
    return {
        "b_id": send_id,
        "b_att": attempts,
        "b_status": status.value,
        "b_skip": skip,
        "b_code": code,
        "b_reply": reply[:1000],
        "b_mid": mid,
        "b_sent_at": now if is_sent else None,  # sent when recorded: see _write
        "b_next": next_at,
        "b_now": now,
    }


def record_results(
    session: Session,
    settings: Settings,
    results: Sequence[DeliveryResult],
    claimed: Mapping[int, Claimed],
    message_ids: Mapping[int, str],
    now: dt.datetime,
    hash_address: Any,
    *,
    skips: Mapping[int, str] | None = None,
    is_last_write: bool = False,
    is_at_most_once: bool = False,
) -> RecordReport:
    """Write every result, and the sends skipped at send time (`skips`: send id → reason), in
    one statement; suppress hard failures; count 5.7.x ones. With `is_at_most_once`
    (marketing mail), a message lost on the wire (`ReplyKind.LOST`) becomes `unknown` and is
    never retried: the relay may have it.

    With `is_last_write`, the caller has nothing more to write in the transaction: when the
    results need nothing beside that statement (no bounce, no soft-bounce count to reset), the
    transaction commits with it, in the same round trip on PostgreSQL.
    """
    report = RecordReport()
    rows = _skip_rows(skips or {}, claimed, now)
    hard: list[tuple[str, str]] = []
    delivered: list[tuple[str, int | None]] = []
    soft: list[tuple[str, int, str]] = []
    for result in results:
        info = claimed[result.send_id]
        reply = f"{result.enhanced} {result.reply}".strip()
        mid = message_ids.get(result.send_id, "")
        status = _status_for(settings, result, info, now, is_at_most_once=is_at_most_once)
        if status is SendStatus.SENT:
            if info.is_soft_counted:
                delivered.append((info.email, result.send_id))
            rows.append(
                _row(
                    result.send_id,
                    info.attempts,
                    status,
                    now,
                    code=result.code,
                    reply=reply,
                    mid=mid,
                    is_sent=True,
                )
            )
        elif status is SendStatus.DEFERRED:
            next_at = now + dt.timedelta(seconds=retry_delay_s(settings, info.attempts))
            rows.append(
                _row(
                    result.send_id,
                    info.attempts,
                    status,
                    now,
                    code=result.code,
                    reply=reply,
                    mid=mid,
                    next_at=next_at,
                )
            )
        else:
            if status is SendStatus.UNKNOWN:
                reply = f"{reply}; {NOT_RESENT}"
            elif result.outcome is Outcome.DEFERRED:
                reply = f"gave up after {info.attempts} attempts: {reply}"
            rows.append(
                _row(
                    result.send_id,
                    info.attempts,
                    status,
                    now,
                    code=result.code,
                    reply=reply,
                    mid=mid,
                )
            )
            if result.kind is ReplyKind.HARD:
                hard.append((info.email, reply))
            elif _is_soft_bounce(result):
                soft.append((info.email, result.send_id, reply))
            elif result.kind is ReplyKind.POLICY:
                report.policy_failures += 1
        report.counts[status.value] = report.counts.get(status.value, 0) + 1
    _write(session, rows, commit=is_last_write and not (hard or delivered or soft))
    report.suppressed = suppress(session, hard, now, hash_address)
    soft_bounces.note_delivered(session, delivered, now, hash_address)
    for email, send_id, reply in soft:
        soft_bounces.note_soft_bounce(
            session,
            settings,
            email=email,
            address_hash=hash_address(email),
            send_id=send_id,
            detail=reply,
            now=now,
        )
    return report


def _is_soft_bounce(result: DeliveryResult) -> bool:
    """A 4xx still refused after the last retry, or a 5xx that is the mailbox's (5.2.2 full)."""
    if result.outcome is Outcome.DEFERRED:
        return result.code is not None and 400 <= result.code < 500
    return result.kind is ReplyKind.SOFT


def _skip_rows(
    skips: Mapping[int, str], claimed: Mapping[int, Claimed], now: dt.datetime
) -> list[dict[str, Any]]:
    """Sends excluded at send time (opted out, suppressed …) become skipped with the reason."""
    return [
        _row(send_id, claimed[send_id].attempts, SendStatus.SKIPPED, now, skip=reason)
        for send_id, reason in skips.items()
    ]


#: PostgreSQL: one statement for a whole slice, its rows passed as arrays. Fixed text, so it is
#: prepared once; executemany would cost a statement and its parameter processing per row.
#: `status COLLATE "C" = 'sending'` means `status = 'sending'` but keeps the planner from
#: answering it with the partial index of sending rows: the statistics of a running campaign
#: (taken when every row was queued) make that index look like one row, while it holds an entry
#: for every row claimed since the last vacuum, so each slice read it whole (19 ms per slice at
#: 100,000 sends, growing with the campaign). Looked up by id, a slice costs ~0.2 ms.
_PG_RECORD = """
UPDATE sends SET status = v.status, skip_reason = v.skip_reason, smtp_code = v.code,
    smtp_reply = v.reply, message_id = v.mid,
    sent_at = CASE WHEN v.is_sent THEN %(now)s::timestamptz END, next_attempt_at = v.next_at,
    lease_expires_at = NULL, updated_at = %(now)s::timestamptz
FROM unnest(%(id)s::bigint[], %(att)s::int[], %(status)s::text[], %(skip)s::text[],
            %(code)s::int[], %(reply)s::text[], %(mid)s::text[], %(is_sent)s::bool[],
            %(next)s::timestamptz[])
    AS v(id, attempts, status, skip_reason, code, reply, mid, is_sent, next_at)
WHERE sends.id = v.id AND sends.status COLLATE "C" = 'sending' AND sends.attempts = v.attempts
"""


#: The columns of `_PG_RECORD` that go as arrays, one value per row.
_PG_ARRAYS = ("id", "att", "status", "skip", "code", "reply", "mid", "next")


def _write(session: Session, rows: list[dict[str, Any]], *, commit: bool = False) -> None:
    """One statement for all `rows`; with `commit` on PostgreSQL the transaction ends with it,
    BEGIN, the statement and COMMIT in one round trip."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        # the rows of one write share their `now` (one record_results call), and a row's sent_at
        # is that `now` or nothing (`_row`): both go as one value, not as arrays of 50 (turning
        # timestamps into text was the dearest part of the statement's parameters)
        columns: dict[str, Any] = {
            key: pg_array([row[f"b_{key}"] for row in rows]) for key in _PG_ARRAYS
        }
        columns["is_sent"] = pg_array([row["b_sent_at"] is not None for row in rows])
        columns["now"] = rows[0]["b_now"]
        with pipelined(session) as conn:
            conn.execute(_PG_RECORD, columns)
            if commit:
                conn.commit()  # the session's own commit then has nothing left to do
    else:
        session.connection().execute(_RECORD, rows)


def _status_for(
    settings: Settings,
    result: DeliveryResult,
    info: Claimed,
    now: dt.datetime,
    *,
    is_at_most_once: bool,
) -> SendStatus:
    if result.outcome is Outcome.SENT:
        return SendStatus.SENT
    if result.outcome is Outcome.FAILED:
        return SendStatus.FAILED
    if is_at_most_once and result.kind is ReplyKind.LOST:
        return SendStatus.UNKNOWN  # the relay may have it: never a second copy
    expired = (now - info.first_attempt_at).total_seconds() >= settings.give_up_after_s
    return SendStatus.FAILED if expired else SendStatus.DEFERRED


def suppress(
    session: Session, failures: Sequence[tuple[str, str]], now: dt.datetime, hash_address: Any
) -> int:
    """Add hard-bounce suppressions for addresses not suppressed yet."""
    if not failures:
        return 0
    by_hash = {hash_address(email): (email, reply) for email, reply in failures}
    known = set(
        session.scalars(
            select(Suppression.address_hash).where(Suppression.address_hash.in_(list(by_hash)))
        )
    )
    new = [
        {
            "address": email,
            "address_hash": h,
            "reason": SuppressionReason.HARD_BOUNCE.value,
            "created_at": now,
            "detail": reply[:1000],
        }
        for h, (email, reply) in by_hash.items()
        if h not in known
    ]
    # another worker may suppress the same address meanwhile: skip it rather than fail; in
    # one order (by hash), so two workers inserting the same addresses never deadlock
    new.sort(key=lambda row: row["address_hash"])
    insert_ignoring_duplicates(session, cast(Table, Suppression.__table__), new)
    return len(new)


def count_policy_failures(session: Session, campaign_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Send)
            .where(
                Send.campaign_id == campaign_id,
                Send.status == SendStatus.FAILED,
                Send.smtp_reply.like("5.7.%"),
            )
        )
        or 0
    )
