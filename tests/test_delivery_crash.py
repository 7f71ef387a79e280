"""A worker process killed with SIGKILL mid-campaign: nothing lost, no marketing duplicates,
the uncertain sends counted as unknown (PostgreSQL, real Redis, a real worker process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mailer import campaigns
from mailer.runtime import Runtime
from tests.conftest import ROOT, TEST_SECRET
from tests.delivery_fixtures import as_user
from tests.smtpd import FaultServer

pytestmark = pytest.mark.slow


def worker_env(rt: Runtime) -> dict[str, str]:
    settings = rt.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=settings.database_url,
        MAILER_BROKER_URL=settings.broker_url,
        MAILER_BROKER_NAMESPACE=settings.broker_namespace,
        MAILER_SMTP_URL=settings.smtp_url,
        MAILER_SECRET_KEY=TEST_SECRET,
        MAILER_RATE_LIMIT_PER_S="25",
        MAILER_LEASE_S=str(settings.lease_s),
        MAILER_RECORD_EVERY=str(settings.record_every),
        MAILER_BATCH_SIZE=str(settings.batch_size),
        MAILER_TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_AUDIENCES_DIR=str(ROOT / "audiences"),
        MAILER_PUBLIC_BASE_URL=settings.public_base_url,
        MAILER_VAR_DIR=str(settings.var_dir),
    )
    return env


def start_worker_process(rt: Runtime, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "workers.main",
            "--processes",
            "1",
            "--threads",
            "2",
            "--queues",
            "priority",
            "bulk",
        ],
        cwd=ROOT,
        env=worker_env(rt),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def sent_so_far(rt: Runtime, campaign_id: int) -> int:
    with rt.sessions() as s:
        return campaigns.send_counts(s, campaign_id).get("sent", 0)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_worker_killed_mid_campaign_loses_nobody_and_duplicates_no_marketing_mail(
    mail_rt, people, make_audience, smtp_server: FaultServer, tmp_path
) -> None:
    from workers.embedded import EmbeddedWorkers

    contacts = make_audience(120)
    cid = campaigns.create_campaign(
        mail_rt,
        actor=as_user(mail_rt, "mark"),
        name="Crash",
        category="features",
        template="features/benefitelect-enrollment-site",
    ).id
    from workers.actors import setup

    wiring = setup(mail_rt.settings, mail_rt)
    worker = start_worker_process(mail_rt, tmp_path / "worker.log")
    try:
        # Given a real worker process sending at 25 messages a second
        campaigns.launch_campaign(
            mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=wiring.dispatch
        )
        deadline = time.monotonic() + 30
        while sent_so_far(mail_rt, cid) < 30:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.05)
        # When it is killed with SIGKILL mid-campaign
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert sent_so_far(mail_rt, cid) < len(contacts)

    # Then new workers and the sweep finish the campaign
    with EmbeddedWorkers(mail_rt.settings, mail_rt, threads=2) as embedded:
        assert embedded.run_until_finished([cid], timeout_s=60)

    counts = campaigns.campaign_status(mail_rt, cid).counts
    received = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert max(received.values()) == 1, "a marketing message went out twice"
    assert counts.get("sent", 0) + counts.get("unknown", 0) == len(contacts)
    # the journal settles the dead worker's claims: only messages on the wire at the kill
    # (at most one per SMTP connection and pipelined follower) can be unknown
    assert counts.get("unknown", 0) <= 2 * 2 * mail_rt.settings.smtp_pool_size
    assert set(received) | _unknown_emails(mail_rt, cid) == {c.email for c in contacts}


def _unknown_emails(rt: Runtime, campaign_id: int) -> set[str]:
    from sqlalchemy import select

    from mailer.models import Send

    with rt.sessions() as s:
        return set(
            s.scalars(
                select(Send.email).where(Send.campaign_id == campaign_id, Send.status == "unknown")
            )
        )
