"""What a worker thread does once per batch, around its messages (docs/performance.md §16): it
reads the batch (on PostgreSQL one statement, committed with it once the thread has the
campaign's compiled messages), and after it asks whether anything is left before trying to
complete the campaign. Real databases, a real SMTP server, one DeliveryContext driven by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from sqlalchemy import func, select, text

from mailer import campaigns
from mailer.delivery import Batch
from mailer.delivery.deliver import DeliveryContext, _may_be_done, deliver_batch
from mailer.delivery.transactions import in_transaction
from mailer.models import AuditEvent, Campaign, Contact, User
from mailer.runtime import Runtime
from mailer.transports import make_transport
from tests.delivery_fixtures import as_user, terminate_backend
from tests.smtpd import FaultServer

TEMPLATE = "features/benefitelect-enrollment-site"


#: `launch(n)`: a promotion launched to `n` new contacts, and the batches (of 20) it dispatched.
Launch = Callable[[int], tuple[int, list[Batch]]]


@pytest.fixture
def launch(
    mail_rt: Runtime, people: dict[str, User], make_audience: Callable[..., list[Contact]]
) -> Launch:
    def launched(n: int) -> tuple[int, list[Batch]]:
        make_audience(n)
        batches: list[Batch] = []
        campaign_id = campaigns.create_campaign(
            mail_rt,
            actor=as_user(mail_rt, "mark"),
            name="Batches",
            category="features",
            template=TEMPLATE,
        ).id
        campaigns.launch_campaign(
            mail_rt, campaign_id, actor=as_user(mail_rt, "mark"), dispatch=batches.extend
        )
        return campaign_id, batches

    return launched


def _new_context(rt: Runtime) -> DeliveryContext:
    return DeliveryContext(rt, lambda: make_transport(rt.settings))


@pytest.fixture
def context(mail_rt: Runtime) -> Iterator[DeliveryContext]:
    ctx = _new_context(mail_rt)
    yield ctx
    ctx.close()


def _may_be_done_now(ctx: DeliveryContext, campaign_id: int) -> bool:
    return in_transaction(
        ctx.sessions, partial(_may_be_done, campaign_id=campaign_id), what="probe"
    )


def _assert_each_got_one(server: FaultServer, recipients: int) -> None:
    received = Counter(r for m in server.messages for r in m.rcpt_tos)
    assert len(received) == recipients and set(received.values()) == {1}


def _backend_pid(ctx: DeliveryContext) -> int:
    return int(
        in_transaction(
            ctx.sessions, lambda s: s.scalar(text("SELECT pg_backend_pid()")), what="backend pid"
        )
    )


def _completions(rt: Runtime, campaign_id: int) -> int:
    with rt.sessions() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(
                    AuditEvent.action == "campaign.complete",
                    AuditEvent.object_id == str(campaign_id),
                )
            )
            or 0
        )


def _status(rt: Runtime, campaign_id: int) -> str | None:
    with rt.sessions() as s:
        return s.scalar(select(Campaign.status).where(Campaign.id == campaign_id))


def test_each_batch_is_read_sent_and_the_last_one_completes_the_campaign(
    mail_rt: Runtime, launch: Launch, smtp_server: FaultServer, context: DeliveryContext
) -> None:
    # Given a promotion to 60 contacts in three batches of 20
    campaign_id, batches = launch(60)
    assert len(batches) == 3
    for n, batch in enumerate(batches):
        # When one thread delivers them one after the other (the first compiles the campaign,
        # the others find it compiled)
        report = deliver_batch(context, *batch.as_args())
        # Then each sends its 20, and only the last one leaves nothing, so completes
        assert report.counts == {"sent": 20}
        is_last = n == len(batches) - 1
        assert _status(mail_rt, campaign_id) == ("completed" if is_last else "sending")
        done = _may_be_done_now(context, campaign_id)
        assert done is (is_last or mail_rt.engine.dialect.name == "sqlite")
    assert _completions(mail_rt, campaign_id) == 1
    _assert_each_got_one(smtp_server, 60)


def test_a_batch_of_a_paused_or_deleted_campaign_sends_nothing_with_or_without_its_messages(
    mail_rt: Runtime, launch: Launch, smtp_server: FaultServer, context: DeliveryContext
) -> None:
    campaign_id, batches = launch(40)
    assert deliver_batch(context, *batches[0].as_args()).counts == {"sent": 20}
    # a thread that has compiled the campaign, and one that has not
    cold = _new_context(mail_rt)
    try:
        campaigns.pause_campaign(mail_rt, campaign_id, actor=as_user(mail_rt, "mark"))
        for ctx in (context, cold):
            report = deliver_batch(ctx, *batches[1].as_args())
            assert report.stopped == "paused" and not report.counts
        with mail_rt.sessions.begin() as s:
            s.execute(text("DELETE FROM campaigns WHERE id = :id"), {"id": campaign_id})
        for ctx in (context, cold):
            report = deliver_batch(ctx, *batches[1].as_args())
            assert report.stopped == "deleted" and not report.counts
    finally:
        cold.close()
    assert len(smtp_server.messages) == 20


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_lost_connection_between_batches_is_retried_for_the_read_and_the_probe(
    mail_rt: Runtime, launch: Launch, smtp_server: FaultServer, context: DeliveryContext
) -> None:
    campaign_id, batches = launch(60)
    # the first batch compiles the campaign: the second's read commits in its one round trip
    assert deliver_batch(context, *batches[0].as_args()).counts == {"sent": 20}
    for batch in batches[1:]:
        # Given the thread's connection killed while it waits between batches
        terminate_backend(mail_rt.engine, _backend_pid(context))
        # When it takes the next batch
        # Then the read (and after the last batch, the probe) is retried on a new connection
        assert deliver_batch(context, *batch.as_args()).counts == {"sent": 20}
    assert _status(mail_rt, campaign_id) == "completed"
    assert _completions(mail_rt, campaign_id) == 1
    _assert_each_got_one(smtp_server, 60)
    # the connection is left idle, not in a transaction the pipeline's commit forgot
    with mail_rt.engine.connect() as admin:
        state = admin.scalar(
            text("SELECT state FROM pg_stat_activity WHERE pid = :pid"),
            {"pid": _backend_pid(context)},
        )
    assert state == "idle"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_per_batch_statements_are_never_prepared(
    mail_rt: Runtime, launch: Launch, smtp_server: FaultServer, context: DeliveryContext
) -> None:
    # Given many batches on one thread's connection (psycopg prepares a statement run 5 times,
    # and PostgreSQL's generic plan of these reads far more of the indexes than they need)
    campaign_id, batches = launch(20)
    for _ in range(8):
        deliver_batch(context, *batches[0].as_args())
        _may_be_done_now(context, campaign_id)
    # Then neither the batch's read nor the probe is among its prepared statements
    prepared = in_transaction(
        context.sessions,
        lambda s: list(s.scalars(text("SELECT statement FROM pg_prepared_statements"))),
        what="prepared statements",
    )
    assert not [p for p in prepared if "ARRAY(" in p or "EXISTS" in p]
