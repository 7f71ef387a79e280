"""A worker process killed with SIGKILL in the middle of a policy notice: the notice is
at-least-once, so every eligible contact still gets it and coverage ends full (PostgreSQL,
real Redis, a real worker process)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
from sqlalchemy import select

from mailer import policy
from mailer.campaigns import campaign_status
from mailer.models import AuditEvent
from tests.delivery_fixtures import as_user, clear_namespace
from tests.smtpd import FaultServer
from tests.test_delivery_crash import sent_so_far, start_worker_process
from tests.test_policy import EFFECTIVE, SUMMARY, TEXT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_worker_killed_mid_notice_still_ends_with_full_coverage(
    mail_rt, people, make_audience, smtp_server: FaultServer, tmp_path
) -> None:
    from workers.actors import setup
    from workers.embedded import EmbeddedWorkers

    contacts = make_audience(50, per_org=3)
    wiring = setup(mail_rt.settings, mail_rt)
    worker = start_worker_process(mail_rt, tmp_path / "worker.log")
    try:
        # Given a real worker process sending the notice at a limited rate
        report = policy.publish_policy(
            mail_rt,
            version="2",
            effective_on=EFFECTIVE,
            text=TEXT,
            summary=SUMMARY,
            is_material=True,
            actor=as_user(mail_rt, "ada"),
            dispatch=wiring.dispatch,
        )
        assert report.campaign_id is not None
        cid = report.campaign_id
        deadline = time.monotonic() + 30
        while sent_so_far(mail_rt, cid) < 30:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.05)
        # When it is killed with SIGKILL mid-notice
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        assert sent_so_far(mail_rt, cid) < len(contacts)
        in_flight = campaign_status(mail_rt, cid).counts.get("sending", 0)

        # Then new workers and the sweep (lease recovery resends policy mail) finish it
        with EmbeddedWorkers(mail_rt.settings, mail_rt, threads=2) as embedded:
            assert embedded.run_until_finished([cid], timeout_s=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        clear_namespace(mail_rt.settings.broker_namespace)

    received = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert set(received) == {c.email for c in contacts}, "an eligible contact was never told"
    # at-least-once: only the slice in flight when the worker died may have gone out twice
    assert sum(received.values()) - len(contacts) <= 2 * mail_rt.settings.record_every
    coverage = policy.coverage(mail_rt, "2", actor=as_user(mail_rt, "ada"))
    assert coverage.is_finished and len(coverage.clients) == 50 and not coverage.not_reached
    assert coverage.contacts["sent"] == len(contacts)
    if in_flight:  # the rows the dead worker held were settled from its journal, not lost
        with mail_rt.sessions() as s:
            recovered = s.scalars(
                select(AuditEvent.details).where(
                    AuditEvent.action.in_(("sends.settled_from_journal", "sends.lease_expired"))
                )
            ).all()
        assert sum(d["count"] for d in recovered) >= in_flight
        # policy mail is never left unknown: what may not have arrived is sent again
        assert all(d.get("unknown", 0) == 0 for d in recovered)
        assert all(d.get("now_status", "queued") == "queued" for d in recovered)
