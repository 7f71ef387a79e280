"""Delivering one batch: claim, re-check consent, render, send over pooled SMTP, record.

The batch is worked in slices of `slice_size()` sends (`MAILER_RECORD_EVERY`), three at a time
in a pipeline per worker thread: while slice N is on the wire (a sender thread), slice N+1 is
claimed (queued → sending, with a lease) and rendered, and slice N-1 is recorded (a recorder
thread). So the claim's round trip and the rendering overlap the SMTP replies, and the commit
never stalls SMTP (docs/performance.md §9). After a crash each slice's journal settles its claims
exactly; only messages on the wire at that moment are uncertain. A pause stops the claims at
once and lets the slice on the wire and the one claimed beside it go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

from psycopg.rows import namedtuple_row
from sqlalchemy import Table, bindparam, exists, false, func, literal, select, update
from sqlalchemy.orm import Session

from mailer.access import SYSTEM
from mailer.campaigns.lifecycle import OUTSTANDING, complete_if_done, transition
from mailer.config import Settings
from mailer.db import HeldConnection, is_postgres, pg_array, pipelined
from mailer.delivery.identities import recipient_from_row, sender_for
from mailer.delivery.journal import Journal
from mailer.delivery.recovery import settle_own_journal
from mailer.delivery.results import (
    Claimed,
    RecordReport,
    count_policy_failures,
    record_results,
)
from mailer.delivery.transactions import in_transaction
from mailer.enums import ALL_MARKETING, CampaignStatus, Category, SendStatus, SkipReason
from mailer.errors import TemplateError
from mailer.messages import CampaignInfo, CampaignMessages
from mailer.models import Campaign, Contact, OptOut, Organization, Send, Suppression, User, utcnow
from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage, ReplyKind
from mailer.runtime import Runtime
from mailer.template_store import campaign_template
from mailer.transports import Transport

#: The send log as a Core table, for the bulk statements of the hot path.
_sends = cast(Table, Send.__table__)

#: How many campaigns' compiled templates a worker thread keeps.
_CAMPAIGN_CACHE_SIZE = 8
#: Slices of a worker thread in flight at once, each with a journal of its own: one claimed
#: and built, one on the wire, one being recorded.
_PIPELINE_DEPTH = 3
#: Under a messages-per-second limit a slice takes at most this share of one second's budget,
#: so the threads (and hosts) sharing the limit each get slices into every second of it.
_SLICES_PER_SECOND_OF_LIMIT = 10
#: A thread's first slice is this big at most, and each next one at most twice the last: until
#: a thread has seen how fast its relay takes messages, it claims little.
_FIRST_SLICE = 50
#: A slice is claimed while the one before it is sent, then sent itself and recorded, so its
#: lease must cover about two slices' sending: one slice's sending is kept to this share of it.
_LEASE_SHARE = 8
#: psycopg's `prepare=` for the per-batch statements: never a server-side prepared statement,
#: so each is planned for its own values (a custom plan, ~0.1 ms); their generic plans read far
#: more of the send log's indexes than they need (docs/performance.md §16).
_CUSTOM_PLAN = False


class RateLimiter(Protocol):
    def acquire(self, count: int) -> None:
        """Block until `count` more messages may go out."""


class Pacer(Protocol):
    def send(
        self,
        messages: Sequence[OutgoingMessage],
        send: Callable[[Sequence[OutgoingMessage]], list[DeliveryResult]],
    ) -> list[DeliveryResult]:
        """Send through `send` within per-domain limits (mailer.pacing.DomainPacer)."""


@dataclass
class BatchReport:
    campaign_id: int
    counts: dict[str, int] = field(default_factory=dict)
    stopped: str = ""  #: why the batch stopped early (campaign paused, cancelled …)

    def add(self, counts: dict[str, int]) -> None:
        for status, n in counts.items():
            self.counts[status] = self.counts.get(status, 0) + n


class DeliveryContext:
    """What a worker thread keeps between batches: event loop, SMTP pool, compiled campaigns,
    its journals, and the two threads of its pipeline: one sends a slice while this one
    claims and builds the next, one records the slice before (module docstring)."""

    def __init__(
        self,
        rt: Runtime,
        transport_factory: Callable[[], Transport],
        *,
        rate_limiter: RateLimiter | None = None,
        journal_dir: Path | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        pacer: Pacer | None = None,
    ) -> None:
        self.rt = rt
        #: This thread's own connection for reading batches, claiming and completing, and the
        #: recorder thread's for results (PostgreSQL; see mailer.db.HeldConnection).
        self._claims = HeldConnection(rt.engine)
        self._records = HeldConnection(rt.engine)
        self.sessions = self._claims.sessions
        self.record_sessions = self._records.sessions
        self.pacer = pacer
        self.clock = clock
        self.rate_limiter = rate_limiter
        #: Claims and answers, on disk the moment they happen (see `journal`). One file per
        #: slice in the pipeline: the slice being claimed, the one sent, the one recorded.
        self.journals: tuple[Journal, ...] | None = (
            tuple(Journal(journal_dir) for _ in range(_PIPELINE_DEPTH))
            if journal_dir is not None
            else None
        )
        self._free_journals = deque(self.journals or ())
        self._transport_factory = transport_factory
        self._transport: Transport | None = None
        self._loop = asyncio.new_event_loop()
        self._campaigns: OrderedDict[int, CampaignMessages] = OrderedDict()
        self._sender: ThreadPoolExecutor | None = None
        self._recorder: ThreadPoolExecutor | None = None
        #: The slice on the wire while the next one is claimed and built.
        self.sending: Future[_SentSlice] | None = None
        #: How long the last slice took on the wire, per message (set by the sender thread),
        #: and how many sends the last claim asked for: the next slice's size follows both.
        self.seconds_per_message = 0.0
        self._last_slice = 0
        #: The slices being recorded, oldest first, each with its journal.
        self._recordings: deque[tuple[Future[RecordReport], Journal | None]] = deque()

    def next_slice_size(self) -> int:
        """How many sends to claim next: `slice_size()`, growing from `_FIRST_SLICE` by
        doubling, and shrunk when the relay is slow enough that a slice would outlive its
        lease."""
        step = slice_size(self.rt.settings, self.seconds_per_message)
        step = min(step, 2 * self._last_slice if self._last_slice else _FIRST_SLICE)
        self._last_slice = step
        return step

    def note_sent(self, count: int, seconds: float) -> None:
        """The sender thread's measure of a slice: `count` messages in `seconds`."""
        if count:
            self.seconds_per_message = seconds / count

    def take_journal(self) -> Journal | None:
        """A journal holding no slice, for the next claim (call `has_free_journal` first)."""
        return self._free_journals.popleft() if self.journals is not None else None

    def give_back(self, journal: Journal | None) -> None:
        if journal is not None:
            self._free_journals.append(journal)

    @property
    def has_free_journal(self) -> bool:
        return self.journals is None or bool(self._free_journals)

    def send(
        self, messages: Sequence[OutgoingMessage], journal: Journal | None = None
    ) -> list[DeliveryResult]:
        if self.pacer is not None:
            return self.pacer.send(messages, partial(self._send_now, journal=journal))
        return self._send_now(messages, journal=journal)

    def _send_now(
        self, messages: Sequence[OutgoingMessage], journal: Journal | None = None
    ) -> list[DeliveryResult]:
        return self._loop.run_until_complete(self._send(messages, journal))

    async def _send(
        self, messages: Sequence[OutgoingMessage], journal: Journal | None
    ) -> list[DeliveryResult]:
        if self._transport is None:
            transport = self._transport_factory()
            await transport.open()
            self._transport = transport
        return await self._transport.send_batch(messages, journal)

    def wait_for_rate(self, count: int) -> None:
        """Block until `count` more messages may go out (MAILER_RATE_LIMIT_PER_S)."""
        if self.rate_limiter is not None and count:
            self.rate_limiter.acquire(count)

    def send_in_background(self, work: Callable[[], _SentSlice]) -> None:
        """Put a slice on the wire in the sender thread, which alone runs the event loop."""
        if self._sender is None:
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="sender")
        self.sending = self._sender.submit(work)

    def sent(self) -> _SentSlice | None:
        """Wait for the slice on the wire; its results (raises what sending raised)."""
        sending, self.sending = self.sending, None
        return sending.result() if sending is not None else None

    def record_in_background(
        self, work: Callable[[], RecordReport], journal: Journal | None
    ) -> None:
        """Record a slice in the recorder thread: one at a time, in the order given."""
        if self._recorder is None:
            self._recorder = ThreadPoolExecutor(1, thread_name_prefix="recorder")
        self._recordings.append((self._recorder.submit(work), journal))

    def recorded(self, *, is_waiting: bool = True) -> RecordReport | None:
        """The report of the oldest slice being recorded, waiting for it unless `is_waiting`
        is False and it is not done yet (raises what recording raised); its journal is free."""
        if not self._recordings or not (is_waiting or self._recordings[0][0].done()):
            return None
        recording, journal = self._recordings.popleft()
        self.give_back(journal)
        return recording.result()

    @property
    def is_recording(self) -> bool:
        return bool(self._recordings)

    def stop_pipeline(self) -> None:
        """Wait until no slice is sent or recorded any more, whatever became of them."""
        with contextlib.suppress(Exception):
            self.sent()
        while self._recordings:
            with contextlib.suppress(Exception):
                self.recorded()
        self._free_journals = deque(self.journals or ())

    def cached_messages(self, campaign_id: int) -> CampaignMessages | None:
        """The campaign's compiled templates if this thread has built them."""
        cached = self._campaigns.get(campaign_id)
        if cached is not None:
            self._campaigns.move_to_end(campaign_id)
        return cached

    def messages_for(self, session: Session, campaign: Campaign) -> CampaignMessages:
        """The campaign's compiled templates, built once per worker thread."""
        cached = self.cached_messages(campaign.id)
        if cached is not None:
            return cached
        built = CampaignMessages(
            self.rt.settings,
            template=campaign_template(session, self.rt.settings, campaign),
            campaign=CampaignInfo(
                id=campaign.id, name=campaign.name, category=Category(campaign.category)
            ),
            sender=sender_for(
                session, self.rt.settings, campaign.category, campaign.sender_username
            ),
            params=dict(campaign.params or {}),
        )
        self._campaigns[campaign.id] = built
        if len(self._campaigns) > _CAMPAIGN_CACHE_SIZE:
            self._campaigns.popitem(last=False)
        return built

    def close(self) -> None:
        self.stop_pipeline()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
        if self._transport is not None:
            self._loop.run_until_complete(self._transport.close())
            self._transport = None
        self._loop.close()
        if self._recorder is not None:
            self._recorder.shutdown(wait=True)
        self._claims.close()
        self._records.close()
        for journal in self.journals or ():
            journal.close()


def deliver_batch(
    ctx: DeliveryContext, campaign_id: int, first_id: int, last_id: int
) -> BatchReport:
    """Send the queued sends `first_id`..`last_id` of a campaign; safe to run twice."""
    rt = ctx.rt
    report = BatchReport(campaign_id)
    begun = in_transaction(
        ctx.sessions,
        lambda session: _begin(ctx, session, campaign_id, first_id, last_id),
        what=f"campaign {campaign_id}: reading batch {first_id}-{last_id}",
    )
    if isinstance(begun, str):
        report.stopped = begun
        return report
    category, messages, pending = begun
    try:
        _deliver_slices(ctx, report, campaign_id, category, messages, pending)
    except BaseException:
        # claimed rows would otherwise wait for their lease: settle them from the journals now
        # (accepted ones sent, never begun ones queued again), once sending and recording stopped
        ctx.stop_pipeline()
        for journal in ctx.journals or ():
            settle_own_journal(rt, journal, ctx.clock())
        raise
    if not report.stopped and in_transaction(
        ctx.sessions,
        partial(_may_be_done, campaign_id=campaign_id),
        what=f"campaign {campaign_id}: looking for sends left",
    ):
        in_transaction(
            ctx.sessions,
            partial(complete_if_done, campaign_id=campaign_id, now=ctx.clock()),
            what=f"campaign {campaign_id}: completing",
        )
    return report


#: PostgreSQL: whether a campaign has sends left to deliver, asked after every batch in one
#: round trip of fixed text, BEGIN to COMMIT. Sequential scans are off for it, as in
#: `lifecycle.has_outstanding_sends` (a running campaign's statistics are stale); the setting
#: is the transaction's own and ends with it. Never prepared (`_CUSTOM_PLAN`): the generic
#: plan psycopg's prepared statement gets after a few runs looks the index up by campaign only
#: and filters the statuses row by row, 21-37 ms at 300,000 sends once a campaign is done.
_PG_OUTSTANDING = (
    "SELECT EXISTS (SELECT 1 FROM sends WHERE campaign_id = %(campaign_id)s AND status IN ("
    + ", ".join(f"'{status.value}'" for status in OUTSTANDING)
    + "))"
)


def _may_be_done(session: Session, campaign_id: int) -> bool:
    """False when the campaign surely has sends left, so the batch need not try to complete
    it: `complete_if_done` (an ORM transaction of three statements) runs only when this says
    True. Begun after the batch's last record committed, as `complete_if_done` must be, so of
    two workers finishing the last batches at once the second sees both done."""
    if not is_postgres(session):
        return True
    with pipelined(session) as conn:
        conn.execute("SELECT set_config('enable_seqscan', 'off', true)")
        cursor = conn.cursor()
        cursor.execute(_PG_OUTSTANDING, {"campaign_id": campaign_id}, prepare=_CUSTOM_PLAN)
        conn.commit()  # the session's own commit then has nothing left to do
    row = cursor.fetchone()
    return not (row and row[0])


def _deliver_slices(
    ctx: DeliveryContext,
    report: BatchReport,
    campaign_id: int,
    category: Category,
    messages: CampaignMessages,
    pending: list[int],
) -> None:
    """Claim and build slice after slice while the slice before is on the wire and the one
    before that is recorded (its own transaction): a thread never waits for the database or
    the SMTP server while it has other work (module docstring)."""
    settings = ctx.rt.settings
    start = 0
    while start < len(pending):
        step = ctx.next_slice_size()
        ids, start = pending[start : start + step], start + step
        _take_recorded(ctx, report, campaign_id, is_waiting=False)
        while not ctx.has_free_journal:
            _take_recorded(ctx, report, campaign_id)
        journal = ctx.take_journal()
        # the claim commits before rendering and SMTP: no locks held while the network works
        claimed, rows = in_transaction(
            ctx.sessions,
            partial(
                _claim,
                category=category,
                campaign_id=campaign_id,
                ids=ids,
                now=ctx.clock(),
                lease_s=settings.lease_s,
                journal=journal,
            ),
            what=f"campaign {campaign_id}: claiming sends",
        )
        if claimed:
            built = _build_slice(messages, category, claimed, rows)
            _record_when_sent(ctx, campaign_id)
            # the rate's tokens are taken only once the slice before is off the wire, just
            # before this one goes: taken earlier, two slices would land in one second of the
            # shared limit (tests/test_scale_out.py). Here, not in the sender thread, so no slice
            # is claimed while this one waits for the rate.
            ctx.wait_for_rate(len(built.outgoing))
            ctx.send_in_background(partial(_send_slice, ctx, built, journal))
            continue
        ctx.give_back(journal)
        if _status(ctx, campaign_id) != CampaignStatus.SENDING:
            report.stopped = "campaign no longer sending"
            break
    _record_when_sent(ctx, campaign_id)
    while ctx.is_recording:
        _take_recorded(ctx, report, campaign_id)


def slice_size(settings: Settings, seconds_per_message: float = 0.0) -> int:
    """How many sends a thread claims, sends and records together: `record_every`, made
    smaller under a rate limit so a slice never takes more than a tenth of a second's budget
    (a slice of 200 against a limit of 300/s would leave a second thread nothing that second),
    and, once the relay's pace is known (`seconds_per_message` on the wire), so a slice's
    sending takes at most an eighth of the lease: a slow relay must not keep claimed sends
    past their lease, when the sweep would take them back (marketing mail `unknown`, service
    mail sent again).
    """
    step = settings.record_every
    if settings.rate_limit_per_s > 0:
        step = min(step, max(1, settings.rate_limit_per_s // _SLICES_PER_SECOND_OF_LIMIT))
    if seconds_per_message > 0:
        step = min(step, max(1, int(settings.lease_s / _LEASE_SHARE / seconds_per_message)))
    return step


def _record_when_sent(ctx: DeliveryContext, campaign_id: int) -> None:
    """Wait for the slice on the wire, then record it in the background."""
    sent = ctx.sent()
    if sent is not None:
        work = partial(_record_slice, ctx, campaign_id, sent)
        ctx.record_in_background(work, sent.journal)


def _record_slice(ctx: DeliveryContext, campaign_id: int, sent: _SentSlice) -> RecordReport:
    """The results of a slice are their own transaction, never shared with a claim."""
    recorded = in_transaction(
        ctx.record_sessions,
        partial(_record, ctx, sent=sent),
        what=f"campaign {campaign_id}: recording results",
    )
    if sent.journal is not None:
        sent.journal.recorded()
    return recorded


def _take_recorded(
    ctx: DeliveryContext, report: BatchReport, campaign_id: int, *, is_waiting: bool = True
) -> None:
    """Count the oldest slice recorded, waiting for it; or, unless `is_waiting`, every slice
    recorded by now. Pause the campaign when sender-side rejections pass the limit."""
    while (recorded := ctx.recorded(is_waiting=is_waiting)) is not None:
        report.add(recorded.counts)
        if recorded.policy_failures:
            in_transaction(
                ctx.sessions,
                partial(
                    _pause_on_policy_failures,
                    limit=ctx.rt.settings.max_policy_failures,
                    campaign_id=campaign_id,
                    now=ctx.clock(),
                ),
                what=f"campaign {campaign_id}: pausing",
            )
        if is_waiting:
            return


def _begin(
    ctx: DeliveryContext, session: Session, campaign_id: int, first_id: int, last_id: int
) -> tuple[Category, CampaignMessages, list[int]] | str:
    """The campaign's compiled messages and the batch's queued send ids, or why not to send."""
    cached = ctx.cached_messages(campaign_id)
    if is_postgres(session):
        found = _batch_postgres(session, campaign_id, first_id, last_id, commit=cached is not None)
    else:
        found = _batch_generic(session, campaign_id, first_id, last_id)
    if found is None:
        return "deleted"
    status, category, pending = found
    if status != CampaignStatus.SENDING:
        return status
    if cached is None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:  # deleted since the statement above read it
            return "deleted"
        cached = ctx.messages_for(session, campaign)
    return Category(category), cached, pending


#: PostgreSQL: a batch's campaign status and category and its queued send ids in one statement
#: of fixed text, with the transaction's BEGIN, and its COMMIT when nothing more is read: once
#: per batch of 500 sends, the ORM's `get` and `select` took ~3 % of a worker's time
#: (docs/performance.md §16). Never prepared (`_CUSTOM_PLAN`), and the campaign's id is given,
#: not joined: the planner must see which campaign it is to take the batch's primary-key range.
#: Joined, or in a generic plan, it guessed a small campaign and read every queued entry of the
#: campaign in the (campaign_id, status) index, 5-7 ms per batch at 300,000 sends, not ~0.6.
_PG_BATCH = """
SELECT c.status, c.category, ARRAY(
    SELECT s.id FROM sends s
    WHERE s.campaign_id = %(campaign_id)s AND s.id BETWEEN %(first_id)s AND %(last_id)s
      AND s.status = 'queued'
    ORDER BY s.id) AS pending
FROM campaigns c WHERE c.id = %(campaign_id)s
"""


def _batch_postgres(
    session: Session, campaign_id: int, first_id: int, last_id: int, *, commit: bool
) -> tuple[str, str, list[int]] | None:
    params = {"campaign_id": campaign_id, "first_id": first_id, "last_id": last_id}
    with pipelined(session) as conn:
        cursor = conn.cursor()
        cursor.execute(_PG_BATCH, params, prepare=_CUSTOM_PLAN)
        if commit:
            conn.commit()  # the session's own commit then has nothing left to do
    row = cursor.fetchone()
    return None if row is None else (row[0], row[1], row[2])


def _batch_generic(
    session: Session, campaign_id: int, first_id: int, last_id: int
) -> tuple[str, str, list[int]] | None:
    campaign = session.execute(
        select(Campaign.status, Campaign.category).where(Campaign.id == campaign_id)
    ).first()
    if campaign is None:
        return None
    pending = session.scalars(
        select(Send.id)
        .where(
            Send.campaign_id == campaign_id,
            Send.id.between(first_id, last_id),
            Send.status == SendStatus.QUEUED,
        )
        .order_by(Send.id)
    )
    return campaign.status, campaign.category, list(pending)


@dataclass
class _BuiltSlice:
    """A claimed slice, its messages built, not yet sent."""

    category: Category
    claimed: dict[int, Claimed]
    outgoing: list[OutgoingMessage]
    skips: dict[int, str]
    failures: list[DeliveryResult]


@dataclass
class _SentSlice:
    """A slice sent but not yet recorded, with the journal that holds its claims."""

    category: Category
    claimed: dict[int, Claimed]
    results: list[DeliveryResult]
    skips: dict[int, str]
    message_ids: dict[int, str]
    journal: Journal | None


def _build_slice(
    messages: CampaignMessages,
    category: Category,
    claimed: dict[int, Claimed],
    rows: Sequence[Any],
) -> _BuiltSlice:
    built = _BuiltSlice(category, claimed, [], {}, [])
    for row in rows:
        reason = _skip_reason(row)
        if reason:
            built.skips[row.send_id] = reason
            continue
        try:
            built.outgoing.append(messages.build(recipient_from_row(row)))
        except TemplateError as exc:
            built.failures.append(
                DeliveryResult(
                    row.send_id,
                    Outcome.FAILED,
                    ReplyKind.UNSUPPORTED,
                    reply=f"rendering failed: {exc}",
                )
            )
    return built


def _send_slice(ctx: DeliveryContext, built: _BuiltSlice, journal: Journal | None) -> _SentSlice:
    """In the sender thread: the slice's messages over SMTP, each journalled as it goes."""
    started = time.monotonic()
    results = ctx.send(built.outgoing, journal) if built.outgoing else []
    ctx.note_sent(len(built.outgoing), time.monotonic() - started)
    results.extend(built.failures)
    message_ids = {m.send_id: m.message_id for m in built.outgoing}
    return _SentSlice(built.category, built.claimed, results, built.skips, message_ids, journal)


def _record(ctx: DeliveryContext, session: Session, *, sent: _SentSlice) -> RecordReport:
    recorded = record_results(
        session,
        ctx.rt.settings,
        sent.results,
        sent.claimed,
        sent.message_ids,
        ctx.clock(),
        ctx.rt.hash_address,
        skips=sent.skips,
        is_last_write=True,
        is_at_most_once=not sent.category.is_at_least_once,
    )
    if sent.skips:
        recorded.counts[SendStatus.SKIPPED.value] = len(sent.skips)
    return recorded


def _claim(
    session: Session,
    *,
    category: Category,
    campaign_id: int,
    ids: list[int],
    now: dt.datetime,
    lease_s: int,
    journal: Journal | None = None,
) -> tuple[dict[int, Claimed], Sequence[Any]]:
    """queued → sending for the rows nobody else took, while the campaign is still sending;
    then who they go to and whether consent still holds. The lease lets the sweep recover them.
    The claim is journalled before it commits, so no crash leaves a claim the journal lacks.
    """
    lease = now + dt.timedelta(seconds=lease_s)
    if session.get_bind().dialect.name == "postgresql":
        claimed, rows = _claim_postgres(session, category, campaign_id, ids, now, lease)
    else:
        claimed, rows = _claim_generic(session, category, campaign_id, ids, now, lease)
    if journal is not None and claimed:
        journal.claimed((send_id, info.attempts) for send_id, info in claimed.items())
    return claimed, rows


def _claim_generic(
    session: Session,
    category: Category,
    campaign_id: int,
    ids: list[int],
    now: dt.datetime,
    lease: dt.datetime,
) -> tuple[dict[int, Claimed], Sequence[Any]]:
    still_sending = exists().where(
        Campaign.id == campaign_id, Campaign.status == CampaignStatus.SENDING.value
    )
    stmt = (
        update(_sends)
        .where(
            _sends.c.id.in_(bindparam("ids", expanding=True)),
            _sends.c.status == SendStatus.QUEUED.value,
            still_sending,
        )
        .values(
            status=SendStatus.SENDING.value,
            lease_expires_at=lease,
            attempts=_sends.c.attempts + 1,
            updated_at=now,
            first_attempt_at=_coalesce_first(now),
        )
        .returning(_sends.c.id, _sends.c.attempts, _sends.c.first_attempt_at, _sends.c.email)
    )
    claimed = {
        row.id: Claimed(row.attempts, _aware(row.first_attempt_at) or now, row.email)
        for row in session.execute(stmt, {"ids": ids})
    }
    if not claimed:
        return claimed, []
    rows = session.execute(_recipients_query(category), {"ids": list(claimed)}).all()
    return claimed, rows


#: PostgreSQL: claim a slice and read its recipients in one statement (a data-modifying CTE),
#: with fixed text so it is prepared once. Same meaning as the generic two-step path below it.
#: `soft_counted`: the address may have a soft-bounce count that a delivery resets (it has one,
#: or the send's address is not the contact's, so the contact's hash does not tell); only
#: those deliveries are looked up in soft_bounces when the results are recorded.
#: `id = ANY(sorted ids)` is an index scan in id order, so every claim locks its rows in the
#: same order as every other claim and the sweep (which never waits: SKIP LOCKED); no row
#: lock beyond the UPDATE's own (an explicit FOR UPDATE doubled the WAL written per claim).
_PG_CLAIM = """
WITH claimed AS (
    UPDATE sends SET status = 'sending', lease_expires_at = %(lease)s,
        attempts = attempts + 1, updated_at = %(now)s,
        first_attempt_at = coalesce(first_attempt_at, %(now)s)
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'queued'
      AND EXISTS (SELECT 1 FROM campaigns WHERE id = %(campaign_id)s AND status = 'sending')
    RETURNING id, attempts, first_attempt_at, email, contact_id
)
SELECT claimed.id AS send_id, claimed.attempts, claimed.first_attempt_at, claimed.email,
    c.id AS contact_id, c.first_name, c.last_name, c.title, c.needs_smtputf8,
    c.status AS contact_status, o.name AS org_name, o.industry, o.benefit_eligible_employees,
    o.city, o.state, o.kind, u.display_name AS manager_name, u.email AS manager_email,
    u.phone AS manager_phone,
    EXISTS (SELECT 1 FROM opt_outs oo WHERE oo.address_hash = c.address_hash
            AND oo.revoked_at IS NULL AND oo.category = ANY(%(scopes)s::text[])) AS opted_out,
    EXISTS (SELECT 1 FROM suppressions sp WHERE sp.address_hash = c.address_hash) AS suppressed,
    (c.email IS DISTINCT FROM claimed.email OR EXISTS (
        SELECT 1 FROM soft_bounces sb WHERE sb.address_hash = c.address_hash)) AS soft_counted
FROM claimed
LEFT JOIN contacts c ON c.id = claimed.contact_id
LEFT JOIN organizations o ON o.id = c.organization_id
LEFT JOIN users u ON u.id = o.account_manager_id
"""


def _claim_postgres(
    session: Session,
    category: Category,
    campaign_id: int,
    ids: list[int],
    now: dt.datetime,
    lease: dt.datetime,
) -> tuple[dict[int, Claimed], Sequence[Any]]:
    params = {
        "ids": pg_array(ids),
        "now": now,
        "lease": lease,
        "campaign_id": campaign_id,
        "scopes": _opt_out_scopes(category),
    }
    # BEGIN and the claim in one round trip; the COMMIT follows once the journal has the claim
    with pipelined(session) as conn:
        cursor = conn.cursor(row_factory=namedtuple_row)
        cursor.execute(_PG_CLAIM, params)
    rows = cursor.fetchall()
    claimed = {
        row.send_id: Claimed(
            row.attempts, row.first_attempt_at, row.email, is_soft_counted=row.soft_counted
        )
        for row in rows
    }
    return claimed, rows


def _opt_out_scopes(category: Category) -> list[str]:
    """The opt-outs that stop mail of this category; none stop policy notices."""
    if category.is_marketing:
        return [category.value, ALL_MARKETING]
    if category is Category.SERVICE:
        return [category.value]
    return []


def _coalesce_first(now: dt.datetime) -> Any:
    return func.coalesce(_sends.c.first_attempt_at, literal(now, type_=Send.first_attempt_at.type))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def _recipients_query(category: Category) -> Any:
    """One query per slice: who each claimed send goes to, and whether consent still holds."""
    scopes = _opt_out_scopes(category)
    opted_out = exists().where(
        OptOut.address_hash == Contact.address_hash,
        OptOut.revoked_at.is_(None),
        OptOut.category.in_(scopes or ["-"]),
    )
    suppressed = exists().where(Suppression.address_hash == Contact.address_hash)
    return (
        select(
            Send.id.label("send_id"),
            Send.email,
            Contact.id.label("contact_id"),
            Contact.first_name,
            Contact.last_name,
            Contact.title,
            Contact.needs_smtputf8,
            Contact.status.label("contact_status"),
            Organization.name.label("org_name"),
            Organization.industry,
            Organization.benefit_eligible_employees,
            Organization.city,
            Organization.state,
            Organization.kind,
            User.display_name.label("manager_name"),
            User.email.label("manager_email"),
            User.phone.label("manager_phone"),
            (opted_out if scopes else false()).label("opted_out"),
            suppressed.label("suppressed"),
        )
        .select_from(Send)
        .outerjoin(Contact, Contact.id == Send.contact_id)
        .outerjoin(Organization, Organization.id == Contact.organization_id)
        .outerjoin(User, User.id == Organization.account_manager_id)
        .where(Send.id.in_(bindparam("ids", expanding=True)))
    )


def _skip_reason(row: Any) -> str:
    if row.contact_id is None:
        return SkipReason.NOT_ELIGIBLE.value
    if row.suppressed:
        return SkipReason.SUPPRESSED.value
    if row.opted_out:
        return SkipReason.OPTED_OUT.value
    if row.contact_status != "active":
        return SkipReason.INACTIVE.value
    return ""


def _status(ctx: DeliveryContext, campaign_id: int) -> str | None:
    return in_transaction(
        ctx.sessions,
        lambda session: session.scalar(select(Campaign.status).where(Campaign.id == campaign_id)),
        what=f"campaign {campaign_id}: reading status",
    )


def _pause_on_policy_failures(
    session: Session, limit: int, campaign_id: int, now: dt.datetime
) -> None:
    """Too many 5.7.x replies mean our own setup is wrong: stop and say why, as listmonk does."""
    failures = count_policy_failures(session, campaign_id)
    if failures < limit:
        return
    transition(
        session,
        campaign_id,
        CampaignStatus.PAUSED,
        actor=SYSTEM,
        action="pause",
        detail=(
            f"paused after {failures} sender-side rejections (5.7.x: authentication or "
            "policy); check DKIM, SPF and the relay's credentials, then resume"
        ),
        now=now,
        failures=failures,
    )
