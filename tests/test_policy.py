"""Privacy-policy versions and the mandatory notice: real database (both backends), real Redis
broker with worker threads, a real SMTP server that injects faults."""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from mailer import policy
from mailer.consent import opt_out
from mailer.delivery import Batch
from mailer.enums import CampaignStatus
from mailer.errors import PermissionDeniedError, PolicyError
from mailer.models import AuditEvent, Campaign, PolicyVersion, Send, Suppression
from mailer.policy.publish import split_summary
from mailer.runtime import Runtime
from tests.conftest import ROOT
from tests.delivery_fixtures import as_user
from tests.smtpd import FaultServer
from tests.test_template_store import counting_compilations

TEXT = (ROOT / "mailer" / "data" / "privacy-policy-1.txt").read_text() + (
    "\nWe now keep service activity logs for seven years.\n"
)
SUMMARY = "We now say how long we keep service activity logs.\n- Activity logs: seven years.\n"
EFFECTIVE = dt.date(2027, 1, 1)
TODAY = dt.datetime.now(dt.UTC).date()


def _publish(rt: Runtime, dispatch: Any, *, version: str = "2", **kw: Any) -> policy.PublishReport:
    values: dict[str, Any] = {
        "version": version,
        "effective_on": EFFECTIVE,
        "text": TEXT,
        "summary": SUMMARY,
        "is_material": True,
        "actor": as_user(rt, "ada"),
        "dispatch": dispatch,
    }
    values.update(kw)
    return policy.publish_policy(rt, **values)


def _received(server: FaultServer) -> Counter[str]:
    return Counter(rcpt for m in server.messages for rcpt in m.rcpt_tos)


def _suppress(rt: Runtime, email: str) -> None:
    with rt.sessions.begin() as s:
        s.add(Suppression(address=email, address_hash=rt.hash_address(email), reason="manual"))


class _Recording:
    """A dispatch that remembers the batches it passed on to the workers."""

    def __init__(self, workers: Any) -> None:
        self.workers = workers
        self.batches: list[Batch] = []

    def __call__(self, batches: Sequence[Batch]) -> None:
        self.batches.extend(batches)
        self.workers.dispatch(batches)


def test_material_version_reaches_every_eligible_client_contact_including_opted_out_ones(
    mail_rt, workers, people, make_org, make_contact, make_audience, smtp_server
) -> None:
    # Given active clients (one contact opted out of everything it can), prospects, a client
    # that ended 30 days ago and one that ended 200 days ago (both former clients whose
    # information is still held: retention purges it only after seven years)
    active = make_audience(3, per_org=2, account_manager_id=people["manager"].id)
    prospects = make_audience(2, kind="prospect", agreement_started_on=None)
    recent = make_audience(1, agreement_ended_on=TODAY - dt.timedelta(days=30))
    old = make_audience(1, agreement_ended_on=TODAY - dt.timedelta(days=200))
    with mail_rt.sessions.begin() as s:
        for scope in ("all_marketing", "service"):
            opt_out(
                s,
                contact_id=active[0].id,
                scope=scope,
                source="preferences",
                ip="127.0.0.1",
                user_agent="test",
                actor="recipient",
            )
    dispatch = _Recording(workers)

    # When an admin publishes a material version
    report = _publish(mail_rt, dispatch)
    assert report.campaign_id is not None
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    # Then every contact of every client, active or former, got exactly one notice, on the
    # priority queue; no prospect did
    assert _received(smtp_server) == Counter({c.email: 1 for c in active + recent + old})
    assert not set(_received(smtp_server)) & {c.email for c in prospects}
    assert dispatch.batches and all(b.is_priority for b in dispatch.batches)
    with mail_rt.sessions() as s:
        stored = s.scalars(select(PolicyVersion).where(PolicyVersion.version == "2")).one()
        assert (stored.published_by, stored.campaign_id) == ("ada", report.campaign_id)
        campaign = s.get(Campaign, report.campaign_id)
        assert (campaign.category, campaign.status) == ("policy", CampaignStatus.COMPLETED)
        assert campaign.params["effective_date"] == "January 1, 2027"
        assert campaign.params["changes"] == ["Activity logs: seven years."]

    # And the notice is factual and mandatory: no unsubscribe header, a link to the version
    message = message_from_bytes(smtp_server.messages[0].data, policy=default_policy)
    assert message["Subject"] == "Update to our Privacy Policy"
    assert message["List-Unsubscribe"] is None
    assert message["From"].addresses[0].addr_spec == "privacy@cpi.example"
    assert "<privacy.lists.cpi.example>" in message["List-Id"]
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_body(("plain",)).get_content()
    assert "https://mail.cpi.example/privacy/2" in body and "January 1, 2027" in body

    # And coverage shows active and former clients apart
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    assert len(coverage.clients) == 5 and not coverage.not_reached
    assert coverage.contacts["sent"] == 8 and coverage.is_finished
    assert coverage.by_client_status() == {
        "active": {"eligible": 3, "reached": 3, "not_reached": 0},
        "former": {"eligible": 2, "reached": 2, "not_reached": 0},
    }
    former = {c.external_id for c in coverage.clients if not c.is_active}
    assert len(former) == 2
    assert coverage.as_dict()["clients_by_status"]["former"]["eligible"] == 2


def test_policy_grace_days_narrows_the_reach_to_recently_ended_agreements(
    mail_rt, people, make_audience
) -> None:
    # Given an active client and former clients that ended 30 and 200 days ago
    active = make_audience(1)
    recent = make_audience(1, agreement_ended_on=TODAY - dt.timedelta(days=30))
    old = make_audience(1, agreement_ended_on=TODAY - dt.timedelta(days=200))
    # When MAILER_POLICY_GRACE_DAYS=90 and a material version is published
    narrow = Runtime(mail_rt.settings.with_(policy_grace_days=90), mail_rt.engine, mail_rt.sessions)
    report = _publish(narrow, None)
    # Then the notice is planned for the active and the recent client only
    with narrow.sessions() as s:
        queued = set(
            s.scalars(
                select(Send.email).where(
                    Send.campaign_id == report.campaign_id, Send.status == "queued"
                )
            )
        )
    assert queued == {c.email for c in active + recent}
    assert not queued & {c.email for c in old}
    # And coverage counts them, one active and one former
    coverage = policy.coverage(narrow, "2", actor=as_user(narrow, "ada"))
    assert {k: v["eligible"] for k, v in coverage.by_client_status().items()} == {
        "active": 1,
        "former": 1,
    }


def test_suppressed_contact_is_undeliverable_and_its_client_flagged_when_it_had_no_other(
    mail_rt, workers, people, make_org, make_contact, smtp_server
) -> None:
    lonely = make_org(name="Lonely Co", account_manager_id=people["manager"].id)
    alone = make_contact(organization=lonely)
    mixed = make_org(name="Mixed Co")
    blocked, fine = make_contact(organization=mixed), make_contact(organization=mixed)
    bouncing_org = make_org(name="Bouncing Co")
    bouncing = make_contact(organization=bouncing_org)
    _suppress(mail_rt, alone.email)
    _suppress(mail_rt, blocked.email)
    smtp_server.on_rcpt(bouncing.email, "550 5.1.1 No such user", times=None)

    report = _publish(mail_rt, workers.dispatch)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    assert _received(smtp_server) == Counter({fine.email: 1})
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    by_name = {c.name: c for c in coverage.clients}
    assert (by_name["Mixed Co"].sent, by_name["Mixed Co"].undeliverable) == (1, 1)
    assert [c.name for c in coverage.not_reached] == ["Lonely Co", "Bouncing Co"]
    assert by_name["Lonely Co"].account_manager == "Amy Manager"
    assert "undeliverable" in by_name["Lonely Co"].reason
    # a hard bounce during the notice suppresses the address and counts it undeliverable
    assert by_name["Bouncing Co"].undeliverable == 1
    assert coverage.contacts == {
        "sent": 1,
        "pending": 0,
        "undeliverable": 3,
        "failed": 0,
        "skipped": 0,
    }


def test_421_then_accept_still_ends_with_full_coverage(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    contacts = make_audience(5)
    smtp_server.on_rcpt(contacts[0].email, "421 4.7.0 Try again later")
    smtp_server.on_rcpt(contacts[3].email, "421 4.7.0 Try again later")

    report = _publish(mail_rt, workers.dispatch)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    assert set(_received(smtp_server)) == {c.email for c in contacts}
    with mail_rt.sessions() as s:
        attempts = dict(
            s.execute(select(Send.email, Send.attempts).where(Send.status == "sent")).tuples().all()
        )
    assert attempts[contacts[0].email] >= 2
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    assert len(coverage.reached) == 5 and not coverage.not_reached


def test_resend_after_adding_a_contact_reaches_only_that_contact(
    mail_rt, workers, people, make_org, make_contact, make_audience, smtp_server
) -> None:
    reached = make_audience(2)
    stuck = make_org(name="Stuck Co")
    _suppress(mail_rt, make_contact(organization=stuck).email)
    empty = make_org(name="Empty Co")  # a client with no contact at all when published
    report = _publish(mail_rt, workers.dispatch)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)
    assert sorted(
        c.name for c in policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada")).not_reached
    ) == [
        "Empty Co",
        "Stuck Co",
    ]

    # Given new contacts for both, and a client signed after publication
    new_stuck = make_contact(organization=stuck)
    new_empty = make_contact(organization=empty)
    make_contact(organization=make_org(name="Signed Later Co"))
    smtp_server.messages.clear()

    # When an admin resends
    resent = policy.resend_notice(
        mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=workers.dispatch
    )
    assert (resent.added, resent.requeued, resent.is_reopened) == (2, 0, True)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    # Then only the new contacts got it, and coverage is full; the later client is not missing
    assert _received(smtp_server) == Counter({new_stuck.email: 1, new_empty.email: 1})
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    assert not coverage.not_reached and len(coverage.clients) == 4
    assert {c.email for c in reached} <= {e for e in _all_sent(mail_rt)}

    # And a second resend has nothing to do
    again = policy.resend_notice(
        mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=workers.dispatch
    )
    assert again.queued == 0 and not again.is_reopened
    with mail_rt.sessions() as s:
        assert s.get(Campaign, report.campaign_id).status == CampaignStatus.COMPLETED


def _all_sent(rt: Runtime) -> list[str]:
    with rt.sessions() as s:
        return list(s.scalars(select(Send.email).where(Send.status == "sent")))


def test_resend_tries_a_fixed_address_again_but_never_a_contact_already_sent(
    mail_rt, workers, people, make_org, make_contact, smtp_server
) -> None:
    org = make_org()
    sent_once = make_contact(organization=org)
    bouncer = make_contact(organization=org)
    smtp_server.on_rcpt(bouncer.email, "550 5.1.1 No such user", times=None)
    report = _publish(mail_rt, workers.dispatch)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    # Given the bouncing contact's address is corrected
    with mail_rt.sessions.begin() as s:
        from mailer.models import Contact

        contact = s.get(Contact, bouncer.id)
        contact.email = "fixed@client.example"
        contact.address_hash = mail_rt.hash_address("fixed@client.example")
    smtp_server.messages.clear()

    resent = policy.resend_notice(
        mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=workers.dispatch
    )
    assert (resent.added, resent.requeued) == (0, 1)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)
    assert _received(smtp_server) == Counter({"fixed@client.example": 1})
    assert sent_once.email not in _received(smtp_server)


def test_non_material_version_is_stored_and_sends_nothing(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    make_audience(3)
    report = _publish(mail_rt, workers.dispatch, is_material=False, summary="")
    assert report.campaign_id is None and not report.counts
    with mail_rt.sessions() as s:
        assert s.scalars(select(Campaign)).all() == []
        assert s.scalars(select(Send)).all() == []
    assert smtp_server.messages == []
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    assert coverage.campaign_id is None and coverage.clients == []
    with pytest.raises(PolicyError, match="not published as material"):
        policy.resend_notice(mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=workers.dispatch)


def test_publishing_the_same_version_twice_is_refused(mail_rt, people, make_audience) -> None:
    make_audience(1)
    held: list[Batch] = []
    _publish(mail_rt, held.extend)
    with pytest.raises(PolicyError, match=r"version 2 was already published on .* by ada"):
        _publish(mail_rt, held.extend, text="something else")
    with mail_rt.sessions() as s:
        assert len(s.scalars(select(Campaign)).all()) == 1


def test_refused_publications_store_nothing(mail_rt, people) -> None:
    held: list[Batch] = []
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        _publish(mail_rt, held.extend, actor=as_user(mail_rt, "mark"))
    with pytest.raises(PolicyError, match="before version 1"):
        _publish(mail_rt, held.extend, effective_on=dt.date(2020, 1, 1))
    with pytest.raises(PolicyError, match="summary is empty"):
        _publish(mail_rt, held.extend, summary="  ")
    with pytest.raises(PolicyError, match="not usable"):
        _publish(mail_rt, held.extend, version="2/../x")
    with mail_rt.sessions() as s:
        assert [v.version for v in s.scalars(select(PolicyVersion))] in ([], ["1"])
        assert s.scalars(select(Campaign)).all() == []
    assert held == []


def test_every_step_is_audited(mail_rt, workers, people, make_audience) -> None:
    make_audience(2)
    report = _publish(mail_rt, workers.dispatch)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)
    policy.resend_notice(mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=workers.dispatch)
    policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))

    with mail_rt.sessions() as s:
        events = {e.action: e for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))}
    published = events["policy.publish"]
    assert (published.actor, published.object_id) == ("ada", "2")
    assert published.details["counts"] == {"queued": 2}
    assert published.details["skip_reasons"] == {}
    assert published.details["campaign_id"] == report.campaign_id
    assert events["campaign.launch"].actor == "ada"
    assert events["campaign.complete"].details["counts"] == {"sent": 2}
    assert events["policy.resend"].details["added"] == 0
    assert events["policy.coverage"].details["not_reached_clients"] == 0


def test_cli_publishes_and_reports_coverage_as_text_json_and_csv(
    mail_rt, people, make_org, make_contact, smtp_server, tmp_path: Path
) -> None:
    from mailer.cli import main

    make_contact(organization=make_org(name="Reached Co"))
    lonely = make_org(name="Lonely Co", account_manager_id=people["manager"].id)
    _suppress(mail_rt, make_contact(organization=lonely).email)
    text, summary = tmp_path / "policy.txt", tmp_path / "summary.txt"
    text.write_text(TEXT)
    summary.write_text(SUMMARY)
    env = {
        "MAILER_DATABASE_URL": mail_rt.settings.database_url,
        "MAILER_SECRET_KEY": mail_rt.settings.secret_key.reveal(),
        "MAILER_BROKER_URL": "memory://",
        "MAILER_SMTP_URL": mail_rt.settings.smtp_url,
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_USER": "ada",
    }
    runner = CliRunner()
    args = ["policy", "publish", "--version", "2", "--effective", "2027-01-01"]
    args += ["--text", str(text), "--summary", str(summary), "--material", "--json"]
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["campaign_id"] is not None
    assert len(smtp_server.messages) == 1  # the in-process workers ran the notice to the end

    shown = runner.invoke(
        main, ["policy", "coverage", "2", "--csv", str(tmp_path / "c.csv")], env=env
    )
    assert shown.exit_code == 0, shown.output
    assert "eligible clients: 2, reached: 1, not reached: 1" in shown.output
    assert "active clients: 2, reached: 1, not reached: 1" in shown.output
    assert "former clients: 0, reached: 0, not reached: 0" in shown.output
    assert "Lonely Co" in shown.output and "Amy Manager" in shown.output
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert {r["name"]: (r["is_reached"], r["client"]) for r in rows} == {
        "Reached Co": ("True", "active"),
        "Lonely Co": ("False", "active"),
    }
    data = json.loads(runner.invoke(main, ["policy", "coverage", "2", "--json"], env=env).output)
    assert [c["name"] for c in data["not_reached"]] == ["Lonely Co"]

    again = runner.invoke(main, args, env=env)
    assert again.exit_code == 1 and "already published" in again.output
    listed = json.loads(runner.invoke(main, ["policy", "list", "--json"], env=env).output)
    assert [v["version"] for v in listed] == ["2", "1"]
    resent = runner.invoke(main, ["policy", "resend", "2"], env=env)
    assert resent.exit_code == 0 and "nothing to resend" in resent.output


def test_client_whose_contacts_are_all_inactive_is_flagged_with_the_reason(
    mail_rt, workers, people, make_org, make_contact, smtp_server
) -> None:
    dormant = make_org(name="Dormant Co")
    make_contact(organization=dormant, status="inactive")
    make_contact(organization=make_org(name="Awake Co"))
    report = _publish(mail_rt, workers.dispatch)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    [flagged] = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada")).not_reached
    assert (flagged.name, flagged.skipped) == ("Dormant Co", 1)
    assert flagged.reason == "1 inactive or not sendable"


def test_resend_is_refused_while_the_notice_is_paused(mail_rt, people, make_audience) -> None:
    from mailer import campaigns

    make_audience(2)
    held: list[Batch] = []
    report = _publish(mail_rt, held.extend)
    campaigns.pause_campaign(mail_rt, report.campaign_id, actor=as_user(mail_rt, "ada"))
    with pytest.raises(PolicyError, match=r"is paused.*resume it first"):
        policy.resend_notice(mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=held.extend)
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        policy.resend_notice(mail_rt, "2", actor=as_user(mail_rt, "amy"), dispatch=held.extend)
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    assert (
        not coverage.is_finished and coverage.not_reached[0].reason == "still sending (1 pending)"
    )


#: A line of a summary file; bullet markers are what the test adds itself.
_line = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="-*•"),
    max_size=30,
)


@given(st.lists(st.tuples(st.booleans(), _line), max_size=8))
def test_summary_file_bullets_become_changes_and_the_rest_the_summary(
    lines: list[tuple[bool, str]],
) -> None:
    text = "\n".join(f"- {t}" if is_bullet else t for is_bullet, t in lines)
    summary, changes = split_summary(text)
    assert changes == [t.strip() for is_bullet, t in lines if is_bullet and t.strip()]
    prose = [t.strip() for is_bullet, t in lines if not is_bullet and t.strip()]
    assert all(p in summary for p in prose)


def test_send_time_recheck_skips_a_newly_suppressed_contact_but_ignores_a_new_opt_out(
    mail_rt, workers, people, make_org, make_contact, smtp_server
) -> None:
    org = make_org(name="Changing Co")
    bounced, unsubscribed = make_contact(organization=org), make_contact(organization=org)
    held: list[Batch] = []
    report = _publish(mail_rt, held.extend)

    # Given the notice is planned, When one address is suppressed and the other opts out of
    # everything it can before the workers get to them
    _suppress(mail_rt, bounced.email)
    with mail_rt.sessions.begin() as s:
        for scope in ("all_marketing", "service"):
            opt_out(
                s,
                contact_id=unsubscribed.id,
                scope=scope,
                source="one_click",
                ip="127.0.0.1",
                user_agent="test",
                actor="recipient",
            )
    workers.dispatch(held)
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)

    # Then the suppressed one is undeliverable, the opted-out one is still told
    assert _received(smtp_server) == Counter({unsubscribed.email: 1})
    [client] = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada")).clients
    assert (client.sent, client.undeliverable) == (1, 1)
    with mail_rt.sessions() as s:
        row = s.scalars(select(Send).where(Send.contact_id == bounced.id)).one()
    assert (row.status, row.skip_reason) == ("skipped", "suppressed")


def test_two_resends_at_once_queue_a_new_contact_only_once(
    mail_rt, people, make_org, make_contact
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    org = make_org()
    make_contact(organization=org)
    held: list[Batch] = []
    report = _publish(mail_rt, held.extend)
    newcomer = make_contact(organization=org)

    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda _: policy.resend_notice(
                    mail_rt, "2", actor=as_user(mail_rt, "ada"), dispatch=None
                ),
                range(2),
            )
        )
    assert sorted(r.added for r in results) == [0, 1]
    with mail_rt.sessions() as s:
        rows = s.scalars(select(Send).where(Send.contact_id == newcomer.id)).all()
    assert [(r.campaign_id, r.status) for r in rows] == [(report.campaign_id, "queued")]


def test_a_worker_compiles_the_notice_at_start_so_its_first_batch_compiles_nothing(
    mail_rt, workers, people, make_audience, smtp_server, monkeypatch
) -> None:
    # Given a worker process prepared at start as `mailer worker` prepares it, with no
    # compiled notice kept before (the cache is per process, and tests share one)
    compiled = counting_compilations(monkeypatch)
    workers.wiring.prepare()
    compiled.clear()  # from here on, only what the notice's batches compile
    contacts = make_audience(3)
    # When a material version is published
    report = _publish(mail_rt, workers.dispatch)
    assert report.campaign_id is not None
    assert workers.run_until_finished([report.campaign_id], timeout_s=60)
    # Then the notices went out on the template compiled at start, compiled no more
    assert _received(smtp_server) == Counter({c.email: 1 for c in contacts})
    assert compiled == []


def test_a_notice_template_that_does_not_compile_is_logged_at_worker_start(
    settings, tmp_path, caplog
) -> None:
    from workers.actors import setup

    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    notice = templates / "policy" / "privacy-policy-change.html"
    notice.write_text(notice.read_text() + "{{ polcy.version }}\n")
    wiring = setup(settings.with_(templates_dir=templates))
    with caplog.at_level("WARNING", logger="mailer.worker"):
        wiring.prepare()  # starts all the same: publishing refuses such a template
    assert "the policy notice template does not compile" in caplog.text
    assert "polcy" in caplog.text


def test_a_dkim_key_that_cannot_be_read_is_logged_at_worker_start(
    settings, tmp_path, caplog
) -> None:
    from workers.actors import setup

    missing = tmp_path / "no-such-key.pem"
    wiring = setup(settings.with_(dkim_selector="s1", dkim_private_key_path=str(missing)))
    with caplog.at_level("WARNING", logger="mailer.worker"):
        wiring.prepare()  # starts all the same; the first batch fails the same way, loudly
    assert "cannot sign with DKIM" in caplog.text
    assert "no-such-key.pem" in caplog.text
