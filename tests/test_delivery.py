"""Campaign delivery end to end: real database (both backends), real Redis broker with worker
threads, a real SMTP server that injects faults."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mailer import campaigns
from mailer.access import Actor
from mailer.config import Settings
from mailer.consent import opt_out
from mailer.delivery import Batch
from mailer.delivery.deliver import DeliveryContext, slice_size
from mailer.enums import CampaignStatus, Role
from mailer.errors import CampaignError, PermissionDeniedError, TemplateError
from mailer.models import AuditEvent, Campaign, Send, Suppression
from mailer.runtime import Runtime
from tests.delivery_fixtures import RABBITMQ_URL, REDIS_URL, as_user
from tests.smtpd import KEEP_AND_DROP, FaultServer

MARKETING_TEMPLATE = "features/benefitelect-enrollment-site"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Every delivery test here runs on Redis and on RabbitMQ (same queues, same guarantees)."""
    return REDIS_URL if request.param == "redis" else RABBITMQ_URL


def _create(
    rt: Runtime,
    username: str,
    *,
    category: str = "features",
    template: str = MARKETING_TEMPLATE,
    rule: str = "",
) -> int:
    return campaigns.create_campaign(
        rt,
        actor=as_user(rt, username),
        name="Test campaign",
        category=category,
        template=template,
        rule_text=rule,
    ).id


def _statuses(rt: Runtime, campaign_id: int) -> dict[str, int]:
    with rt.sessions() as s:
        return campaigns.send_counts(s, campaign_id)


def _received(server: FaultServer) -> Counter[str]:
    return Counter(rcpt for m in server.messages for rcpt in m.rcpt_tos)


def test_campaign_delivers_every_eligible_contact_exactly_once(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    clients = make_audience(12, per_org=2)
    prospects = make_audience(5, kind="prospect", agreement_started_on=None)
    cid = _create(mail_rt, "mark")

    summary = campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert summary.counts == {"queued": 29}
    assert workers.run_until_finished([cid], timeout_s=60)

    received = _received(smtp_server)
    assert received == Counter({c.email: 1 for c in clients + prospects})
    assert _statuses(mail_rt, cid) == {"sent": 29}
    with mail_rt.sessions() as s:
        campaign = s.get(Campaign, cid)
        assert campaign.status == CampaignStatus.COMPLETED
        ids = list(s.scalars(select(Send.message_id).where(Send.campaign_id == cid)))
    assert len(set(ids)) == 29 and all(i.startswith("<") for i in ids)


def test_contact_who_opts_out_after_launch_is_skipped_at_send_time(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    contacts = make_audience(6)
    cid = _create(mail_rt, "mark")
    held: list[Batch] = []
    campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=held.extend)

    # Given the campaign is planned, When a contact opts out of all marketing before sending
    with mail_rt.sessions.begin() as s:
        opt_out(
            s,
            contact_id=contacts[0].id,
            scope="all_marketing",
            source="preferences",
            ip="127.0.0.1",
            user_agent="test",
            actor="recipient",
        )
    workers.dispatch(held)
    assert workers.run_until_finished([cid], timeout_s=60)

    # Then that contact gets nothing and the send log says why
    assert contacts[0].email not in _received(smtp_server)
    with mail_rt.sessions() as s:
        row = s.scalars(select(Send).where(Send.contact_id == contacts[0].id)).one()
    assert (row.status, row.skip_reason) == ("skipped", "opted_out")
    assert _statuses(mail_rt, cid) == {"sent": 5, "skipped": 1}


def test_421_and_451_replies_are_retried_then_delivered(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    contacts = make_audience(4)
    smtp_server.on_rcpt(contacts[0].email, "421 4.7.0 Try again later")
    smtp_server.on_rcpt(contacts[1].email, "451 4.7.1 Greylisted, come back soon")
    cid = _create(mail_rt, "mark")

    campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([cid], timeout_s=60)

    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})
    with mail_rt.sessions() as s:
        rows = s.execute(select(Send.email, Send.attempts).where(Send.campaign_id == cid))
        attempts = dict(rows.tuples().all())
    # a 421 also closes the connection, deferring whatever else was queued on it
    assert attempts[contacts[0].email] == 2
    assert attempts[contacts[1].email] == 2
    assert _statuses(mail_rt, cid) == {"sent": 4}


@pytest.mark.parametrize("category", ["features", "service"])
def test_a_message_whose_reply_is_lost_after_its_content_is_never_sent_twice_as_marketing(
    category: str, mail_rt, workers, people, make_audience, smtp_server
) -> None:
    # Given a relay that keeps one message and hangs up before saying so (RFC 1047)
    contacts = make_audience(4, account_manager_id=people["manager"].id)
    uncertain = contacts[1].email
    smtp_server.on_data(uncertain, KEEP_AND_DROP)
    if category == "service":
        cid = _create(mail_rt, "amy", category="service", template="service/planned-maintenance")
    else:
        cid = _create(mail_rt, "mark")
    actor = as_user(mail_rt, "amy" if category == "service" else "mark")

    campaigns.launch_campaign(mail_rt, cid, actor=actor, dispatch=workers.dispatch)
    assert workers.run_until_finished([cid], timeout_s=60)

    with mail_rt.sessions() as s:
        row = s.execute(select(Send).where(Send.email == uncertain)).scalar_one()
    if category == "service":
        # Then service mail is sent again (at least once: the duplicate is the price)
        assert _received(smtp_server)[uncertain] == 2
        assert _statuses(mail_rt, cid) == {"sent": 4}
        assert row.attempts == 2
    else:
        # Then marketing mail is not: the send is unknown, and says why
        assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})
        assert _statuses(mail_rt, cid) == {"sent": 3, "unknown": 1}
        assert (row.status, row.attempts, row.next_attempt_at) == ("unknown", 1, None)
        assert "may have been delivered" in row.smtp_reply
        assert "not resent (marketing mail is sent at most once)" in row.smtp_reply


def test_a_batch_on_the_delay_queue_as_a_retry_comes_back_is_delivered_soon_after_it_is_due(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    from workers.broker import DELAY_QUEUE_POLL_MS

    contacts = make_audience(3)
    cid = _create(mail_rt, "mark")
    held: list[Batch] = []
    campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=held.extend)
    # Given the batch comes back the way a failed one is retried: on the delay queue, due in 1 s
    started = time.monotonic()
    for batch in held:
        actor = workers.wiring.priority if batch.is_priority else workers.wiring.bulk
        actor.send_with_options(args=batch.as_args(), delay=1_000)

    # Then it is delivered once due, within one idle poll of the delay queue
    while _statuses(mail_rt, cid) != {"sent": 3} and time.monotonic() - started < 30:
        time.sleep(0.05)
    elapsed_s = time.monotonic() - started
    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})
    assert 1.0 <= elapsed_s < 1.0 + DELAY_QUEUE_POLL_MS / 1000 + 2.0


def test_550_fails_without_retry_and_suppresses_the_address(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    contacts = make_audience(3)
    smtp_server.on_rcpt(contacts[0].email, "550 5.1.1 No such user", times=None)
    cid = _create(mail_rt, "mark")
    campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([cid], timeout_s=60)

    with mail_rt.sessions() as s:
        row = s.scalars(select(Send).where(Send.contact_id == contacts[0].id)).one()
        assert (row.status, row.attempts, row.smtp_code) == ("failed", 1, 550)
        assert s.scalar(select(func.count()).select_from(Suppression)) == 1

    # a later campaign skips the suppressed address when planning
    second = _create(mail_rt, "mark")
    summary = campaigns.launch_campaign(
        mail_rt, second, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert summary.skip_reasons == {"suppressed": 1}
    assert workers.run_until_finished([second], timeout_s=60)


def test_smtp_server_down_for_a_while_delays_but_loses_nothing(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    contacts = make_audience(8)
    cid = _create(mail_rt, "mark")
    with smtp_server.down():
        campaigns.launch_campaign(
            mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
        )
        # sweeping until the first refused connection is recorded (a loaded machine, or a
        # RabbitMQ delivery, may take more than a couple of seconds)
        deadline = time.monotonic() + 30
        while _statuses(mail_rt, cid).get("deferred", 0) == 0:
            assert time.monotonic() < deadline, _statuses(mail_rt, cid)
            workers.run_until_finished([cid], timeout_s=1)
    assert workers.run_until_finished([cid], timeout_s=60)
    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})


def test_sender_side_rejections_pause_the_campaign_with_a_reason(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    rt = Runtime(mail_rt.settings.with_(max_policy_failures=3), mail_rt.engine, mail_rt.sessions)
    make_audience(10)
    smtp_server.on_mail("550 5.7.26 Unauthenticated email is not accepted", times=None)
    cid = _create(rt, "mark")
    workers.runtime.settings = rt.settings  # the workers read the limit from their settings
    campaigns.launch_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=workers.dispatch)
    workers.run_until_finished([cid], timeout_s=30)
    with rt.sessions() as s:
        campaign = s.get(Campaign, cid)
        assert campaign.status == CampaignStatus.PAUSED
        assert "5.7" in campaign.status_detail and "resume" in campaign.status_detail
        assert s.scalar(select(func.count()).select_from(Suppression)) == 0


def test_pause_stops_the_claims_and_resume_finishes_without_duplicates(
    mail_rt, people, make_audience, smtp_server
) -> None:
    from workers.embedded import EmbeddedWorkers

    slow = mail_rt.settings.with_(rate_limit_per_s=20)
    rt = Runtime(slow, mail_rt.engine, mail_rt.sessions)
    step = slice_size(slow)  # a tenth of the limit: 2
    # three seconds of the limit (the first second's budget goes out at once): one slice on
    # the wire at the pause, one claimed beside it, most never claimed
    contacts = make_audience(3 * slow.rate_limit_per_s)
    cid = _create(rt, "mark")
    with EmbeddedWorkers(slow, rt, threads=1) as embedded:
        campaigns.launch_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=embedded.dispatch)
        _wait_for(lambda: _statuses(rt, cid).get("sent", 0) >= 2 * step)
        campaigns.pause_campaign(rt, cid, actor=as_user(rt, "mark"))
        at_pause = len(smtp_server.messages)
        embedded.run_until_finished([cid], timeout_s=2 * step / slow.rate_limit_per_s + 2)
        # at most the rest of the slice on the wire at the pause and the one claimed beside it
        # still go out; whatever the timing, the slices after those were never claimed
        assert len(smtp_server.messages) - at_pause <= 2 * step
        assert _statuses(rt, cid).get("queued", 0) > 0

        campaigns.resume_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=embedded.dispatch)
        assert embedded.run_until_finished([cid], timeout_s=60)
    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})


def test_a_rate_limit_makes_slices_a_tenth_of_its_second_at_most() -> None:
    settings = Settings(record_every=200)
    assert slice_size(settings) == 200
    assert slice_size(settings.with_(rate_limit_per_s=5000)) == 200
    assert slice_size(settings.with_(rate_limit_per_s=300)) == 30
    assert slice_size(settings.with_(rate_limit_per_s=5)) == 1
    assert slice_size(settings.with_(record_every=10, rate_limit_per_s=300)) == 10


def test_a_thread_starts_with_small_slices_and_shrinks_them_for_a_slow_relay(mail_rt) -> None:
    settings = mail_rt.settings.with_(record_every=200, lease_s=2, rate_limit_per_s=0)
    ctx = DeliveryContext(Runtime(settings, mail_rt.engine, mail_rt.sessions), lambda: None)  # type: ignore[arg-type, return-value]
    try:
        # until the relay's pace is known, a thread claims 50, then doubles up to the setting
        assert [ctx.next_slice_size() for _ in range(4)] == [50, 100, 200, 200]
        # 20 ms a message: 200 would be 4 s on the wire, twice the lease; an eighth of it is 12
        ctx.note_sent(100, 2.0)
        assert ctx.next_slice_size() == 12
        # the relay is fast again: back up by doubling
        ctx.note_sent(12, 0.006)
        assert [ctx.next_slice_size() for _ in range(5)] == [24, 48, 96, 192, 200]
    finally:
        ctx.close()


def test_launch_with_a_broken_template_leaves_a_draft(mail_rt, people, make_audience) -> None:
    make_audience(2)
    with pytest.raises(TemplateError):
        _create(mail_rt, "mark", template="features/no-such-template")
    cid = _create(mail_rt, "mark")
    with mail_rt.sessions.begin() as s:
        s.get(Campaign, cid).template = "features/no-such-template"
    with pytest.raises(TemplateError):
        campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=None)
    with mail_rt.sessions() as s:
        assert s.get(Campaign, cid).status == CampaignStatus.DRAFT
        assert s.scalar(select(func.count()).select_from(Send)) == 0


def test_a_refused_action_names_the_role_it_needs(mail_rt, people) -> None:
    with pytest.raises(PermissionDeniedError, match="need the role account_manager or admin"):
        _create(mail_rt, "mark", category="service", template="service/scheduled-maintenance")
    with pytest.raises(PermissionDeniedError, match="need the role admin"):
        _create(mail_rt, "amy", category="policy", template="policy/privacy-policy-change")


def test_only_the_owner_or_an_admin_may_launch_or_pause_and_refusals_are_audited(
    mail_rt, people, make_audience
) -> None:
    make_audience(2)
    cid = _create(mail_rt, "mark")
    other = Actor(user_id=None, username="mona", role=Role.MARKETING, via="web", ip="192.0.2.4")
    with pytest.raises(PermissionDeniedError, match="belongs to 'mark'; only they or an admin"):
        campaigns.launch_campaign(mail_rt, cid, actor=other, dispatch=None)
    campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "ada"), dispatch=None)
    with pytest.raises(PermissionDeniedError, match="may pause it"):
        campaigns.pause_campaign(mail_rt, cid, actor=other)
    with mail_rt.sessions() as s:
        denied = s.scalars(select(AuditEvent).where(AuditEvent.action == "denied")).all()
        assert [(e.actor, e.details["action"], e.ip) for e in denied] == [
            ("mona", "campaign.launch", "192.0.2.4"),
            ("mona", "campaign.pause", "192.0.2.4"),
        ]
        launched = s.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.launch"))
        assert [e.actor for e in launched] == ["ada"]


def test_launching_twice_is_refused(mail_rt, people, make_audience) -> None:
    make_audience(2)
    cid = _create(mail_rt, "mark")
    campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=None)
    with pytest.raises(CampaignError, match="only a draft"):
        campaigns.launch_campaign(mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=None)
    assert sum(_statuses(mail_rt, cid).values()) == 2


def test_a_scheduled_campaign_starts_when_due_and_a_missed_one_waits(
    mail_rt, people, make_audience
) -> None:
    from mailer.delivery import scheduler_tick

    make_audience(3)
    now = dt.datetime.now(dt.UTC)
    due = _create(mail_rt, "mark")
    late = _create(mail_rt, "mark")
    campaigns.launch_campaign(
        mail_rt,
        due,
        actor=as_user(mail_rt, "mark"),
        dispatch=None,
        at=now + dt.timedelta(minutes=5),
    )
    campaigns.launch_campaign(
        mail_rt,
        late,
        actor=as_user(mail_rt, "mark"),
        dispatch=None,
        at=now + dt.timedelta(minutes=1),
    )
    held: list[Batch] = []

    # When the scheduler only wakes 62 minutes from now (the workers were down)
    report = scheduler_tick(mail_rt, dispatch=held.extend, now=now + dt.timedelta(minutes=62))

    # Then the campaign 61 minutes late waits, marked missed; the one 57 minutes late starts
    assert report.missed == [late] and report.started == [due]
    with mail_rt.sessions() as s:
        missed = s.get(Campaign, late)
        assert missed.status == CampaignStatus.MISSED
        assert "launch it again" in missed.status_detail
        assert s.scalar(select(func.count()).select_from(Send).where(Send.campaign_id == late)) == 0
    campaigns.launch_campaign(mail_rt, late, actor=as_user(mail_rt, "mark"), dispatch=held.extend)
    assert campaigns.campaign_status(mail_rt, late).counts == {"queued": 3}


def test_due_campaign_is_started_by_the_scheduler(mail_rt, people, make_audience) -> None:
    from mailer.delivery import scheduler_tick

    make_audience(3)
    now = dt.datetime.now(dt.UTC)
    cid = _create(mail_rt, "mark")
    campaigns.launch_campaign(
        mail_rt,
        cid,
        actor=as_user(mail_rt, "mark"),
        dispatch=None,
        at=now + dt.timedelta(minutes=5),
    )
    held: list[Batch] = []
    assert scheduler_tick(mail_rt, dispatch=held.extend, now=now).started == []
    report = scheduler_tick(mail_rt, dispatch=held.extend, now=now + dt.timedelta(minutes=6))
    assert report.started == [cid]
    assert sum(b.last_id - b.first_id + 1 for b in held) == 3


def _wait_for(condition: Any, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_schedulers_never_start_the_same_campaign_twice(mail_rt, people, make_audience):
    import threading

    from mailer.delivery import scheduler_tick

    make_audience(30)
    now = dt.datetime.now(dt.UTC)
    cid = _create(mail_rt, "mark")
    campaigns.launch_campaign(
        mail_rt,
        cid,
        actor=as_user(mail_rt, "mark"),
        dispatch=None,
        at=now + dt.timedelta(minutes=1),
    )
    held: list[Batch] = []
    started: list[int] = []
    barrier = threading.Barrier(4)

    def scheduler() -> None:
        barrier.wait()
        report = scheduler_tick(mail_rt, dispatch=held.extend, now=now + dt.timedelta(minutes=2))
        started.extend(report.started)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert started == [cid]
    assert _statuses(mail_rt, cid) == {"queued": 30}
    assert sum(b.last_id - b.first_id + 1 for b in held) == 30


def test_service_notice_goes_from_the_account_manager_to_their_own_clients_only(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    import email
    from email import policy

    own = make_audience(3, account_manager_id=people["manager"].id)
    others = make_audience(2, account_manager_id=people["other_manager"].id)
    prospects = make_audience(
        2, kind="prospect", agreement_started_on=None, account_manager_id=people["manager"].id
    )
    cid = _create(
        mail_rt,
        "amy",
        category="service",
        template="service/planned-maintenance",
        rule="kind = client or kind = prospect",
    )
    campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "amy"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([cid], timeout_s=60)

    assert set(_received(smtp_server)) == {c.email for c in own}
    assert not {c.email for c in others + prospects} & set(_received(smtp_server))
    message = email.message_from_bytes(smtp_server.messages[0].data, policy=policy.default)
    assert "amy@cpi.example" in str(message["Reply-To"])
    assert "Amy Manager" in str(message["From"])


def test_priority_mail_overtakes_a_running_promotion(
    mail_rt, people, make_audience, smtp_server
) -> None:
    from workers.embedded import EmbeddedWorkers

    slow = mail_rt.settings.with_(rate_limit_per_s=40)
    rt = Runtime(slow, mail_rt.engine, mail_rt.sessions)
    make_audience(160, account_manager_id=people["manager"].id)
    promo = _create(rt, "mark")
    notice = _create(
        rt, "amy", category="service", template="service/planned-maintenance", rule='state = "OR"'
    )
    with EmbeddedWorkers(slow, rt, threads=1) as embedded:
        campaigns.launch_campaign(rt, promo, actor=as_user(rt, "mark"), dispatch=embedded.dispatch)
        _wait_for(lambda: _statuses(rt, promo).get("sent", 0) >= 10)
        campaigns.launch_campaign(rt, notice, actor=as_user(rt, "amy"), dispatch=embedded.dispatch)
        assert embedded.run_until_finished([notice], timeout_s=60)
        # the service notice finished while the promotion was still under way
        assert _statuses(rt, promo).get("queued", 0) > 0
        assert embedded.run_until_finished([promo], timeout_s=60)


def test_a_large_audience_is_planned_in_two_steps_each_contact_once(
    mail_rt, workers, people, make_audience, smtp_server, monkeypatch
) -> None:
    monkeypatch.setattr("mailer.campaigns.launch.FIRST_CHUNK_ROWS", 7)
    contacts = make_audience(25)
    cid = _create(mail_rt, "mark")
    summary = campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert summary.total == 25
    assert workers.run_until_finished([cid], timeout_s=60)
    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})


def test_planning_cut_short_by_a_crash_is_finished_by_the_sweep_and_nothing_completes_early(
    mail_rt, people, make_audience, monkeypatch
) -> None:
    from mailer.delivery import scheduler_tick

    monkeypatch.setattr("mailer.campaigns.launch.FIRST_CHUNK_ROWS", 5)
    make_audience(12)
    cid = _create(mail_rt, "mark")
    now = dt.datetime.now(dt.UTC)
    # Given a launcher that planned the first chunk and died before planning the rest
    mark = as_user(mail_rt, "mark")
    with mail_rt.sessions.begin() as s:
        first = campaigns.begin_launch(mail_rt, s, s.get(Campaign, cid), actor=mark, now=now)
    assert sum(b.last_id - b.first_id + 1 for b in first.batches) == 5
    with mail_rt.sessions.begin() as s:  # the first chunk is sent meanwhile
        s.execute(update(Send).where(Send.campaign_id == cid).values(status="sent"))

    # When the sweep runs before the lease is up, the campaign is not completed early
    held: list[Batch] = []
    scheduler_tick(mail_rt, dispatch=held.extend, now=now + dt.timedelta(seconds=1))
    assert campaigns.campaign_status(mail_rt, cid).status == "sending"

    # Then after the lease the sweep plans the rest, once
    later = now + dt.timedelta(seconds=mail_rt.settings.lease_s + 1)
    scheduler_tick(mail_rt, dispatch=held.extend, now=later)
    scheduler_tick(mail_rt, dispatch=held.extend, now=later)
    assert _statuses(mail_rt, cid) == {"sent": 5, "queued": 7}
    assert sum(b.last_id - b.first_id + 1 for b in held) == 7
