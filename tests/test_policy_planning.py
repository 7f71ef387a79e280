"""Publishing a policy notice in two steps: the version commits with the first chunk of its
send log, the rest is planned while that is sent. A publisher killed in between leaves a
notice the sweep finishes, every contact planned once; coverage is right meanwhile and a
resend waits. Real database (both backends), a real process killed with SIGKILL."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mailer import policy
from mailer.delivery import Batch, scheduler_tick
from mailer.errors import PolicyError
from mailer.models import AuditEvent, Campaign, Contact, PolicyVersion, Send
from mailer.runtime import Runtime
from tests.conftest import ROOT
from tests.delivery_fixtures import as_user
from tests.test_delivery_crash import worker_env
from tests.test_policy import _publish, _suppress

#: Contacts in the first chunk, in these tests.
FIRST = 4


@pytest.fixture
def small_first_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mailer.campaigns.launch.FIRST_CHUNK_ROWS", FIRST)
    # the rest in chunks of 2, then 4, … contacts
    monkeypatch.setattr("mailer.delivery.planning.REST_FIRST_CHUNK_CONTACTS", 2)
    monkeypatch.setattr("mailer.delivery.planning.REST_CHUNK_GROWTH", 2)


def _stored(rt: Runtime) -> tuple[PolicyVersion | None, Campaign | None, int]:
    """The version "2", its campaign and how many sends it has, as another session sees them."""
    with rt.sessions() as s:
        version = s.scalars(select(PolicyVersion).where(PolicyVersion.version == "2")).first()
        campaign = s.get(Campaign, version.campaign_id) if version and version.campaign_id else None
        sends = s.scalar(select(func.count()).select_from(Send)) or 0
        s.expunge_all()
    return version, campaign, sends


def _planned_contacts(rt: Runtime, campaign_id: int) -> Counter[int]:
    with rt.sessions() as s:
        rows = s.scalars(select(Send.contact_id).where(Send.campaign_id == campaign_id))
        return Counter(rows)


def test_the_version_commits_with_the_first_chunk_and_the_rest_is_planned_after(
    mail_rt, people, make_audience, small_first_chunk
) -> None:
    contacts = make_audience(5, per_org=2)
    seen: list[tuple[str, bool, int]] = []

    def dispatch(batches: list[Batch]) -> None:
        # what a worker can see when the batches reach it: only what is committed
        version, campaign, sends = _stored(mail_rt)
        assert version is not None and campaign is not None
        seen.append((campaign.status, campaign.planned_through is not None, sends))

    # When a material version is published
    report = _publish(mail_rt, dispatch)

    # Then the first batches went out with the version, its campaign and the first chunk
    # committed, the campaign marked half planned; the rest came after, chunk by chunk, each
    # committed before its batches went out, and nothing is left
    assert seen == [
        ("sending", True, FIRST),
        ("sending", True, FIRST + 2),
        ("sending", False, len(contacts)),
    ]
    assert report.counts == {"queued": len(contacts)} and report.batches == 3
    assert _planned_contacts(mail_rt, report.campaign_id) == Counter(c.id for c in contacts)
    with mail_rt.sessions() as s:
        published = s.scalars(select(AuditEvent).where(AuditEvent.action == "policy.publish")).one()
    assert published.details["partial"] is True
    assert published.details["counts"] == {"queued": FIRST}


def test_a_failure_before_the_commit_stores_neither_the_version_nor_any_of_its_plan(
    mail_rt, people, make_audience, small_first_chunk, monkeypatch
) -> None:
    make_audience(6)

    def broken_audit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    # the publication's audit event is the last write of its transaction
    monkeypatch.setattr("mailer.policy.publish.audit", broken_audit)
    with pytest.raises(RuntimeError):
        _publish(mail_rt, None)
    assert _stored(mail_rt) == (None, None, 0)
    with mail_rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0


#: Publishes version 2 with a first chunk of FIRST contacts; while planning the rest (its rows
#: written, not committed) it says so and waits to be killed.
PUBLISHER = f"""
import datetime as dt
import time

import mailer.campaigns.launch as launch
import mailer.delivery.planning as planning
from mailer import policy
from mailer.access import actor_for_username
from mailer.runtime import open_runtime

launch.FIRST_CHUNK_ROWS = {FIRST}
plan = planning._plan


def plan_then_hang(session, campaign, rule_text, **kw):
    plan(session, campaign, rule_text, **kw)
    if kw.get("after_contact_id") is not None:
        print("planning the rest", flush=True)
        time.sleep(600)


planning._plan = plan_then_hang
rt = open_runtime()
with rt.sessions() as s:
    ada = actor_for_username(s, "ada")
policy.publish_policy(
    rt, version="2", effective_on=dt.date(2027, 1, 1), text="Policy text.",
    summary="A change.\\n- One thing.\\n", is_material=True, actor=ada, dispatch=None,
)
"""


def test_a_publisher_killed_mid_plan_leaves_a_notice_the_sweep_finishes_each_contact_once(
    mail_rt, people, make_org, make_contact, make_audience
) -> None:
    # Given clients whose contacts, past the first chunk, include one inactive contact and
    # one suppressed address (its client has another contact)
    contacts = make_audience(4, per_org=2)
    late = make_org(name="Late Co")
    inactive = make_contact(organization=make_org(name="Dormant Co"), status="inactive")
    suppressed = make_contact(organization=late)
    contacts += [make_contact(organization=late), inactive, suppressed]
    _suppress(mail_rt, suppressed.email)

    # When the publisher is killed with SIGKILL while it plans the rest
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER],
        cwd=ROOT,
        env=worker_env(mail_rt),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert publisher.stdout is not None
        line = publisher.stdout.readline()
        assert line == b"planning the rest\n", line + publisher.stdout.read()
    finally:
        os.killpg(publisher.pid, signal.SIGKILL)
        publisher.wait(10)

    # Then the version is stored with its notice, planned through the first chunk only
    version, campaign, sends = _stored(mail_rt)
    assert version is not None and campaign is not None
    assert (campaign.status, sends) == ("sending", FIRST)
    assert campaign.planned_through == sorted(c.id for c in contacts)[FIRST - 1]

    # And coverage counts the contacts not yet planned as the planner will write them
    ada = as_user(mail_rt, "ada")
    during = policy.coverage(mail_rt, "2", actor=ada)
    assert during.is_planning and not during.is_finished
    assert during.as_dict()["is_planning"] is True
    assert during.contacts == {
        "sent": 0,
        "pending": len(contacts) - 2,
        "undeliverable": 1,
        "failed": 0,
        "skipped": 1,
    }
    assert len(during.clients) == 6
    assert not [c for c in during.clients if c.reason == "no contacts"]

    # And a resend waits for the plan to be whole
    with pytest.raises(PolicyError, match="still being planned"):
        policy.resend_notice(mail_rt, "2", actor=ada, dispatch=None)

    # When the first chunk is sent, the sweep does not complete the notice before the lease is
    # up; after it, the sweep plans the rest, once however often it runs
    with mail_rt.sessions.begin() as s:
        s.execute(update(Send).where(Send.campaign_id == campaign.id).values(status="sent"))
    held: list[Batch] = []
    now = dt.datetime.now(dt.UTC)
    scheduler_tick(mail_rt, dispatch=held.extend, now=now)
    assert _stored(mail_rt)[1].status == "sending"  # type: ignore[union-attr]
    later = now + dt.timedelta(seconds=mail_rt.settings.lease_s + 1)
    scheduler_tick(mail_rt, dispatch=held.extend, now=later)
    scheduler_tick(mail_rt, dispatch=held.extend, now=later)

    # Then every contact is planned exactly once, and coverage, now finished planning, shows
    # what it foresaw
    assert _planned_contacts(mail_rt, campaign.id) == Counter(c.id for c in contacts)
    after = policy.coverage(mail_rt, "2", actor=ada)
    assert not after.is_planning and after.contacts["sent"] == FIRST
    assert {c.organization_id: c.pending + c.sent for c in after.clients} == {
        c.organization_id: c.pending + c.sent for c in during.clients
    }
    assert {c.organization_id: (c.undeliverable, c.skipped) for c in after.clients} == {
        c.organization_id: (c.undeliverable, c.skipped) for c in during.clients
    }

    # And once the rest is sent, every client with a reachable contact was reached, once
    with mail_rt.sessions.begin() as s:
        s.execute(
            update(Send)
            .where(Send.campaign_id == campaign.id, Send.status == "queued")
            .values(status="sent")
        )
        reachable = s.scalars(select(Contact.organization_id).where(Contact.status == "active"))
        reachable_orgs = set(reachable)
    done = policy.coverage(mail_rt, "2", actor=ada)
    assert {c.organization_id for c in done.reached} == reachable_orgs
    assert [c.name for c in done.not_reached] == ["Dormant Co"]
    assert held and all(b.is_priority for b in held)
