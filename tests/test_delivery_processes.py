"""A real deployment under stress: `mailer worker` and `mailer scheduler` processes through lease
contention, SIGKILLs, a Redis outage and a PostgreSQL restart. Nobody is lost, marketing mail
never goes out twice, and the long-running processes never exit.

Sizes are small on purpose (the figures at scale come from scripts/bench-crash).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery_fixtures import clear_namespace
from tests.process_fixtures import (
    SHARED_REDIS,
    Deployment,
    PrivatePostgres,
    PrivateRedis,
    received,
    shared_database,
)
from tests.smtpd import FaultServer

pytestmark = pytest.mark.slow


@pytest.fixture
def smtpd() -> Iterator[FaultServer]:
    server = FaultServer(has_pipelining=True).start()
    yield server
    server.stop()


@pytest.fixture
def deployment(tmp_path: Path, smtpd: FaultServer) -> Iterator[Deployment]:
    """A deployment on a fresh database of the shared PostgreSQL and a shared-Redis namespace."""
    with shared_database() as url:
        dep = Deployment(tmp_path, url, SHARED_REDIS, smtpd.url)
        try:
            yield dep
        finally:
            dep.close()
            clear_namespace(dep.namespace)


def _start(dep: Deployment) -> None:
    dep.start("scheduler", "scheduler", ready="mailer scheduler ready")
    dep.start("worker", "worker", "-p", "2", "-t", "2", ready="mailer worker ready")


def _assert_running(dep: Deployment) -> None:
    for proc in dep.procs:
        if proc.name in ("scheduler", "worker") and proc.popen.returncode is None:
            assert proc.popen.poll() is None, f"{proc.name} exited:\n{proc.text()[-3000:]}"


def _assert_nobody_lost(dep: Deployment, cid: int, smtpd: FaultServer, *, marketing: bool) -> None:
    got = received(smtpd)
    everyone = dep.emails(cid)
    unknown = dep.emails(cid, "unknown")
    assert set(got) | unknown == everyone, "someone got nothing and is not marked unknown"
    if marketing:
        assert not got or max(got.values()) == 1, "a marketing message went out twice"
        assert not unknown & set(got) or True  # unknown ones may or may not have arrived
    else:
        assert set(got) == everyone, "service mail must reach everyone"


def test_lease_contention_on_postgresql_completes_without_deadlock_loss_or_duplicates(
    deployment: Deployment, smtpd: FaultServer
) -> None:
    # Given a 2-second lease, 2 × 2 workers and a sweep every half second, and a campaign
    # rate-limited so rows stay queued well past the lease
    dep = deployment
    dep.env.update(MAILER_LEASE_S="2", MAILER_RATE_LIMIT_PER_S="150")
    dep.seed(700)
    _start(dep)
    cid = dep.campaign("promotions")

    # When it runs to the end
    dep.launch(cid)
    dep.wait_done(cid, timeout_s=180)

    # Then every recipient got exactly one message, nothing deadlocked, nothing exited
    assert dep.status(cid) == "completed"
    assert dep.counts(cid) == {"sent": 700}
    assert set(received(smtpd).values()) == {1}
    assert len(received(smtpd)) == 700
    assert "deadlock" not in dep.logs().lower()
    _assert_running(dep)

    # and `mailer status` shows both worker processes, the scheduler and the queues
    status = json.loads(dep.mailer("status", "--json"))
    assert (status["workers_alive"], status["schedulers_alive"]) == (2, 1)
    assert set(status["queues"]) == {"priority", "bulk"}
    assert status["sweep_overdue"] is False
    assert status["campaigns_sending"] == []

    # and SIGTERM stops the worker group at once and cleanly: exit 0, nothing logged as failing
    worker = next(proc for proc in dep.procs if proc.name == "worker")
    os.killpg(worker.popen.pid, signal.SIGTERM)
    assert worker.popen.wait(30) == 0
    assert "Traceback" not in worker.text(), worker.text()[-3000:]
    assert "CRITICAL" not in worker.text(), worker.text()[-3000:]


def test_a_slow_relay_with_a_short_lease_gets_small_slices_and_no_duplicates(
    deployment: Deployment, smtpd: FaultServer
) -> None:
    # Given a 2-second lease, a sweep every half second, slices of up to 200 in batches of
    # 500, and a relay that takes 20 ms over each message (two connections: 10 ms a message,
    # so a slice of 200 would be on the wire 2 s, and the one claimed beside it 4 s). The
    # worker's live journal keeps its claims its own for a while past their lease
    # (recovery.LIVE_GRACE_S), and its slices shrink to an eighth of the lease on the wire
    dep = deployment
    dep.env.update(MAILER_LEASE_S="2", MAILER_RECORD_EVERY="200", MAILER_BATCH_SIZE="500")
    smtpd.data_delay_s = 0.02
    dep.seed(800)
    dep.start("scheduler", "scheduler", ready="mailer scheduler ready")
    dep.start("worker", "worker", "-p", "1", "-t", "1", ready="mailer worker ready")
    cid = dep.campaign("service")

    # When the service notice runs to the end
    dep.launch(cid)
    dep.wait_done(cid, timeout_s=120)

    # Then no lease ran out under a slice: every client's contact got it exactly once
    everyone = dep.emails(cid)
    assert len(everyone) > 300
    assert dep.status(cid) == "completed"
    assert dep.counts(cid) == {"sent": len(everyone)}
    assert received(smtpd) == dict.fromkeys(everyone, 1)
    _assert_running(dep)


def test_scheduler_once_prints_json_and_campaign_status_warns_without_a_scheduler(
    deployment: Deployment,
) -> None:
    dep = deployment
    dep.seed(5)
    cid = dep.campaign("promotions")
    dep.launch(cid)  # no worker and no scheduler running
    warned = dep.run("campaign", "status", str(cid))
    assert "no scheduler has ever swept" in warned.stderr
    found = json.loads(dep.mailer("scheduler", "--once", "--json"))
    assert found["batches"] == 0 and found["completed"] == []
    assert "no scheduler" not in dep.run("campaign", "status", str(cid)).stderr


@pytest.mark.parametrize("category", ["promotions", "service"])
def test_sigkilled_worker_processes_and_groups_lose_nobody(
    deployment: Deployment, smtpd: FaultServer, category: str
) -> None:
    dep = deployment
    dep.env.update(MAILER_LEASE_S="3", MAILER_RATE_LIMIT_PER_S="120")
    dep.seed(600)
    _start(dep)
    worker = next(p for p in dep.procs if p.name == "worker")
    cid = dep.campaign(category)
    dep.launch(cid)

    # When one worker process is SIGKILLed, then another, then the whole worker group
    dep.wait_sent(cid, 80)
    os.kill(worker.children()[0], signal.SIGKILL)
    worker.wait_for("died (signal 9)")  # the supervisor replaces it, the other one goes on
    dep.wait_sent(cid, 160)
    os.kill(worker.children()[-1], signal.SIGKILL)
    dep.wait_sent(cid, 240)
    worker.kill_group()
    time.sleep(1)
    dep.start("worker", "worker", "-p", "2", "-t", "2", ready="mailer worker ready")

    # Then the campaign completes: nobody lost, marketing never twice, few unknown
    dep.wait_done(cid, timeout_s=180)
    assert dep.status(cid) == "completed"
    _assert_nobody_lost(dep, cid, smtpd, marketing=category != "service")
    counts = dep.counts(cid)
    assert counts.get("unknown", 0) <= 24, counts  # ≤ messages on the wire at the kills
    duplicates = sum(n - 1 for n in received(smtpd).values())
    assert duplicates <= 24, duplicates
    _assert_running(dep)


def test_redis_down_longer_than_the_lease_loses_nobody(tmp_path: Path, smtpd: FaultServer) -> None:
    redis_server = PrivateRedis(tmp_path).start()
    try:
        with shared_database() as url:
            dep = Deployment(tmp_path, url, redis_server.url, smtpd.url, MAILER_LEASE_S="2")
            try:
                dep.env["MAILER_RATE_LIMIT_PER_S"] = "100"
                dep.seed(400)
                _start(dep)
                cid = dep.campaign("promotions")
                dep.launch(cid)
                dep.wait_sent(cid, 60)

                # When Redis is gone for 3 leases (and comes back empty: no persistence)
                redis_server.stop()
                time.sleep(6)
                redis_server.start()

                # Then the sweep re-enqueues the lost batches and the campaign completes
                dep.wait_done(cid, timeout_s=180)
                assert dep.status(cid) == "completed"
                _assert_nobody_lost(dep, cid, smtpd, marketing=True)
                _assert_running(dep)
            finally:
                dep.close()
    finally:
        redis_server.stop()


def test_postgresql_restarted_mid_campaign_loses_nobody(tmp_path: Path, smtpd: FaultServer) -> None:
    pg = PrivatePostgres().init()
    dep = Deployment(tmp_path, pg.url, SHARED_REDIS, smtpd.url, MAILER_LEASE_S="3")
    try:
        dep.env["MAILER_RATE_LIMIT_PER_S"] = "100"
        dep.seed(400)
        _start(dep)
        cid = dep.campaign("promotions")
        dep.launch(cid)
        dep.wait_sent(cid, 60)

        # When PostgreSQL restarts under the running campaign
        dep.engine.dispose()
        pg.restart()

        # Then workers and scheduler reconnect and the campaign completes
        dep.wait_done(cid, timeout_s=180)
        assert dep.status(cid) == "completed"
        _assert_nobody_lost(dep, cid, smtpd, marketing=True)
        _assert_running(dep)
    finally:
        dep.close()
        clear_namespace(dep.namespace)
        pg.remove()
