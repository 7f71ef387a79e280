"""The delivery journal settles a dead worker's claims exactly, and delivery transactions are
retried through real PostgreSQL deadlocks and killed connections."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from mailer import campaigns
from mailer.db import HeldConnection, pipelined
from mailer.delivery import Batch, Journal, scheduler_tick
from mailer.delivery.journal import read_journals, this_host
from mailer.delivery.transactions import in_transaction, is_retryable
from mailer.models import Send
from mailer.runtime import Runtime
from tests.delivery_fixtures import as_user, terminate_backend

MARKETING_TEMPLATE = "features/benefitelect-enrollment-site"
BUMP = text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :i")


def _launch_held(rt: Runtime, category: str = "features") -> tuple[int, list[int]]:
    cid = campaigns.create_campaign(
        rt,
        actor=as_user(rt, "mark"),
        name="Journal",
        category=category,
        template=MARKETING_TEMPLATE,
    ).id
    held: list[Batch] = []
    campaigns.launch_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=held.extend)
    ids = sorted(i for b in held for i in range(b.first_id, b.last_id + 1))
    return cid, ids


def _claim_all(rt: Runtime, ids: list[int], lease: dt.datetime) -> None:
    with rt.sessions.begin() as s:
        s.execute(
            update(Send)
            .where(Send.id.in_(ids))
            .values(status="sending", attempts=1, lease_expires_at=lease)
        )


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _statuses(rt: Runtime, ids: list[int]) -> list[str]:
    with rt.sessions() as s:
        return [s.get(Send, i).status for i in ids]  # type: ignore[union-attr]


def test_a_dead_workers_journal_settles_each_claim_exactly(
    mail_rt: Runtime, people, make_audience
) -> None:
    make_audience(6)
    cid, ids = _launch_held(mail_rt)
    now = dt.datetime.now(dt.UTC)
    # Given a worker that claimed six sends (lease still running), began four, had two
    # accepted and one refused, and was then killed
    _claim_all(mail_rt, ids, now + dt.timedelta(minutes=5))
    journal_dir = mail_rt.settings.journal_dir
    journal_dir.mkdir(parents=True, exist_ok=True)
    path = journal_dir / f"{this_host()}.{_dead_pid()}.1-abc.journal"
    a, b, c, d, e, f = ids
    path.write_text(
        f"c {' '.join(f'{i}:1' for i in ids)}\na{a}\na{b}\ns{a} 1\na{c}\nr{c}\na{d}\ns{b} 2\n"
        "a"  # a line cut short by the kill
    )

    # When the sweep runs, before the lease is up
    report = scheduler_tick(mail_rt, dispatch=None, now=now)

    # Then accepted → sent, refused and never begun → queued again, begun → unknown
    assert _statuses(mail_rt, ids) == ["sent", "sent", "queued", "unknown", "queued", "queued"]
    assert (report.recovered_sent, report.requeued, report.unknown) == (2, 3, 1)
    enqueued = {i for b in report.batches for i in range(b.first_id, b.last_id + 1)}
    assert {c, e, f} <= enqueued and not {a, b} & enqueued
    assert not path.exists()
    assert campaigns.campaign_status(mail_rt, cid).status == "sending"


def test_a_live_workers_claims_are_left_to_it_after_its_lease(
    mail_rt: Runtime, people, make_audience
) -> None:
    make_audience(3)
    _, ids = _launch_held(mail_rt)
    now = dt.datetime.now(dt.UTC)
    _claim_all(mail_rt, ids, now - dt.timedelta(seconds=1))
    journal = Journal(mail_rt.settings.journal_dir)  # this process: alive
    journal.claimed((i, 1) for i in ids)

    # When the lease has just expired, the live owner keeps its claims
    scheduler_tick(mail_rt, dispatch=None, now=now)
    assert _statuses(mail_rt, ids) == ["sending"] * 3

    # Then long after, it counts as hung: the lease rule applies (marketing: unknown)
    scheduler_tick(mail_rt, dispatch=None, now=now + dt.timedelta(minutes=10))
    assert _statuses(mail_rt, ids) == ["unknown"] * 3
    # a journal closed with claims in it stays for the sweep; an emptied one goes
    journal.close()
    assert [j.claims for j in read_journals(mail_rt.settings.journal_dir)] == [{i: 1 for i in ids}]
    emptied = Journal(mail_rt.settings.journal_dir)
    emptied.claimed([(1, 1)])
    emptied.recorded()
    emptied.close()
    assert not emptied.path.exists()


def test_a_worker_journals_each_message_and_empties_the_file_once_recorded(
    mail_rt: Runtime, people, make_audience, workers, smtp_server
) -> None:
    contacts = make_audience(12)
    cid = campaigns.create_campaign(
        mail_rt,
        actor=as_user(mail_rt, "mark"),
        name="J",
        category="features",
        template=MARKETING_TEMPLATE,
    ).id
    campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([cid], timeout_s=60)
    assert campaigns.campaign_status(mail_rt, cid).counts == {"sent": len(contacts)}
    files = list(Path(mail_rt.settings.journal_dir).glob("*.journal"))
    assert files and all(f.read_bytes().strip(b"\0") == b"" for f in files)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_real_deadlock_is_retried_until_both_transactions_commit(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text("CREATE TABLE deadlock_probe (id int PRIMARY KEY, n int)"))
        conn.execute(text("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)"))
    barrier = threading.Barrier(2, timeout=10)
    attempts = {"ab": 0, "ba": 0}
    errors: list[BaseException] = []

    def bump(order: tuple[int, int], name: str) -> None:
        def work(session) -> None:  # type: ignore[no-untyped-def]
            attempts[name] += 1
            first, second = order
            session.execute(BUMP, {"i": first})
            if attempts[name] == 1:
                barrier.wait()  # both hold their first row: the second UPDATEs deadlock
            session.execute(BUMP, {"i": second})

        try:
            in_transaction(rt.sessions, work, what=f"probe {name}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=bump, args=((1, 2), "ab")),
        threading.Thread(target=bump, args=((2, 1), "ba")),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert sorted(attempts.values()) == [1, 2]  # exactly one lost the deadlock, ran again
        with rt.engine.connect() as conn:
            assert conn.execute(text("SELECT sum(n) FROM deadlock_probe")).scalar() == 4
    finally:
        with rt.engine.begin() as conn:  # the schema must stay the models' (test_db)
            conn.execute(text("DROP TABLE deadlock_probe"))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_connection_killed_mid_transaction_is_retried_on_a_new_one(rt: Runtime) -> None:
    with rt.engine.begin() as conn:
        conn.execute(text("CREATE TABLE kill_probe (id int PRIMARY KEY)"))
    admin = rt.engine.connect()
    calls = 0

    def work(session) -> int:  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        session.execute(text("INSERT INTO kill_probe VALUES (:i)"), {"i": calls})
        if calls == 1:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        return int(session.execute(text("SELECT count(*) FROM kill_probe")).scalar() or 0)

    try:
        assert in_transaction(rt.sessions, work, what="probe") == 1
        admin.close()
        assert calls == 2
        with rt.engine.connect() as conn:
            assert conn.execute(text("SELECT array_agg(id) FROM kill_probe")).scalar() == [2]
    finally:
        with rt.engine.begin() as conn:
            conn.execute(text("DROP TABLE kill_probe"))
    assert os.getpid()  # the test process itself carried on


@pytest.mark.parametrize("client", ["auto", "aiosmtplib"])
def test_the_transport_journals_a_message_as_begun_only_when_its_content_goes_out(
    tmp_path: Path, client: str
) -> None:
    import asyncio

    from mailer.config import Settings
    from mailer.transports import make_transport
    from tests.smtpd import KEEP_AND_DROP, FaultServer
    from tests.test_transports import message

    server = FaultServer(has_pipelining=True).start()
    try:
        server.on_rcpt("refused@x.test", "550 5.1.1 no such user")
        server.on_data("lost@x.test", KEEP_AND_DROP)
        settings = Settings.from_env({}, env_file=None).with_(
            smtp_url=server.url, smtp_client=client, smtp_pool_size=1
        )
        journal = Journal(tmp_path / "journal")
        messages = [
            message(1, "a@x.test"),
            message(2, "refused@x.test"),
            message(3, "c@x.test"),
            message(4, "lost@x.test"),
        ]

        async def run() -> None:
            transport = make_transport(settings)
            await transport.open()
            try:
                await transport.send_batch(messages, journal)
            finally:
                await transport.close()

        asyncio.run(run())
    finally:
        server.stop()
    found = read_journals(journal.path.parent)[0]
    journal.close()
    # the refused one never reached DATA: not begun, and answered as refused; the one whose
    # reply was lost after its content went out stays begun and unanswered, as uncertain as it
    # is (settled as unknown for marketing mail, queued again for service mail)
    assert (found.begun, set(found.accepted), found.refused) == ({1, 3, 4}, {1, 3}, {2})


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_workers_connections_killed_mid_batch_are_retried_and_nobody_gets_two(
    mail_rt: Runtime, people, make_audience, smtp_server
) -> None:
    import time
    from collections import Counter

    from workers.embedded import EmbeddedWorkers

    slow = mail_rt.settings.with_(rate_limit_per_s=60)
    rt = Runtime(slow, mail_rt.engine, mail_rt.sessions)
    contacts = make_audience(90)
    cid = campaigns.create_campaign(
        rt, actor=as_user(rt, "mark"), name="K", category="features", template=MARKETING_TEMPLATE
    ).id
    with EmbeddedWorkers(slow, rt, threads=2) as embedded:
        campaigns.launch_campaign(rt, cid, actor=as_user(rt, "mark"), dispatch=embedded.dispatch)
        # When every other connection to the database is terminated, twice, mid-campaign (the
        # second time once the workers have connected again: under load the first kill can come
        # after the 50th send already)
        others = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        for sent_before in (20, 50):
            deadline = time.monotonic() + 30
            while campaigns.campaign_status(rt, cid).counts.get("sent", 0) < sent_before or (
                not _scalar(rt, others)
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with rt.engine.connect() as conn:
                killed = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            assert killed
        # Then the workers reconnect and finish: everyone exactly once
        assert embedded.run_until_finished([cid], timeout_s=90)
    received = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert received == Counter({c.email: 1 for c in contacts})
    assert campaigns.campaign_status(rt, cid).counts == {"sent": len(contacts)}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_held_connection_dropped_between_transactions_is_replaced_by_the_retry(
    rt: Runtime,
) -> None:
    """Delivery threads keep their connection without a ping per transaction (a PostgreSQL
    restart drops it): the next transaction fails on it once and is retried on a new one, also
    when its statement and commit go pipelined in one round trip."""
    with rt.engine.begin() as conn:
        conn.execute(text("CREATE TABLE pipe_probe (id int PRIMARY KEY)"))
    held = HeldConnection(rt.engine)
    calls = 0

    def insert(i: int) -> Callable[[Session], int]:
        def work(session: Session) -> int:
            nonlocal calls
            calls += 1
            with pipelined(session) as conn:
                cursor = conn.execute(
                    "INSERT INTO pipe_probe VALUES (%s) RETURNING pg_backend_pid()", (i,)
                )
                conn.commit()
            return int(cursor.fetchone()[0])

        return work

    try:
        first = in_transaction(held.sessions, insert(1), what="probe 1")
        terminate_backend(rt.engine, first)
        second = in_transaction(held.sessions, insert(2), what="probe 2")
        assert second != first
        assert calls == 3  # the second transaction ran twice: on the dropped connection, then anew
        with rt.engine.connect() as conn:
            assert conn.execute(
                text("SELECT array_agg(id ORDER BY id) FROM pipe_probe")
            ).scalar() == [1, 2]
    finally:
        held.close()
        with rt.engine.begin() as conn:
            conn.execute(text("DROP TABLE pipe_probe"))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_error_in_a_pipelined_statement_comes_out_as_sqlalchemys(rt: Runtime) -> None:
    """What the hot path sends pipelined fails the way Session.execute fails (so in_transaction
    tells a deadlock from a bug), and the connection serves the next transaction."""
    held = HeldConnection(rt.engine)

    def divide(session: Session) -> None:
        with pipelined(session) as conn:
            conn.execute("SELECT 1 / 0")

    def one(session: Session) -> int:
        return int(session.execute(text("SELECT 1")).scalar_one())

    try:
        with pytest.raises(DataError) as raised:
            in_transaction(held.sessions, divide, what="probe")
        assert getattr(raised.value.orig, "sqlstate", None) == "22012"
        assert not is_retryable(raised.value)
        assert in_transaction(held.sessions, one, what="probe") == 1
    finally:
        held.close()


#: A worker thread's journal in a child process: slices of 3,000 sends (a slice outgrows the
#: file's first 64 KiB), each claimed, begun and answered line by line, then recorded; it says
#: "grown" once the file has grown, and runs until killed.
_JOURNALLING_CHILD = """
import sys
from pathlib import Path
from mailer.delivery.journal import Journal

journal = Journal(Path(sys.argv[1]))
first = 1_000_000
while True:
    ids = range(first, first + 3000)
    journal.claimed((i, 1) for i in ids)
    for i in ids:
        journal.attempting(i)
        journal.answered(i, i % 3 != 0)
        if i == 1_002_000:
            print("grown", flush=True)
    journal.recorded()
    first += 3000
"""


@pytest.mark.parametrize("delay_s", [0.0, 0.011, 0.05])
def test_a_journal_killed_mid_slice_holds_only_whole_lines_of_that_slice(
    tmp_path: Path, delay_s: float
) -> None:
    # Given a process journalling as fast as it can, past the file's first size
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-c", _JOURNALLING_CHILD, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"grown\n"
    started_ms = time.time_ns() // 1_000_000 - 60_000

    # When it is killed at some point of some slice
    time.sleep(delay_s)
    child.kill()
    child.wait()

    # Then its journal holds one slice, every line whole: what was begun is a run of the claimed
    # ids from the slice's first, and answers are for begun ids only
    (journal,) = read_journals(tmp_path)
    assert journal.pid == child.pid and not journal.is_owner_alive
    if journal.claims:
        first = min(journal.claims)
        assert set(journal.claims) == set(range(first, first + 3000))
        assert set(journal.claims.values()) == {1}
        assert journal.begun <= set(range(first, first + len(journal.begun)))
    assert set(journal.accepted) | journal.refused <= journal.begun
    assert all(i % 3 != 0 for i in journal.accepted) and all(i % 3 == 0 for i in journal.refused)
    assert all(started_ms <= ms <= time.time_ns() // 1_000_000 for ms in journal.accepted.values())
    assert journal.path.stat().st_size > 64 * 1024


def test_a_reader_keeps_the_whole_lines_before_the_first_nul(tmp_path: Path) -> None:
    # Given journals whose last line a kill cut short: bytes missing at its end, or in its middle
    # (a copy need not fill its bytes in order), with the zeros of the unused room after it
    cases = {
        "end": b"c 11:1 12:1 13:1\na11\ns11 5\na1",
        "middle": b"c 11:1 12:1 13:1\na11\ns11 5\na1\0\0\n",
        "claim": b"c 11:1 12:1 13:1\na11\ns11 5\nc 14:1 1\0\0\0\0\n",
    }
    for name, data in cases.items():
        (tmp_path / f"{this_host()}.{_dead_pid()}.1-{name}.journal").write_bytes(data + bytes(4096))

    # Then each reads as its whole lines: the cut one is as if never written
    for journal in read_journals(tmp_path):
        assert (journal.claims, journal.begun, journal.accepted) == (
            {11: 1, 12: 1, 13: 1},
            {11},
            {11: 5},
        ), journal.path.name


def test_a_recorded_journal_is_zeros_and_an_open_one_grows_as_a_slice_needs(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    size = journal.path.stat().st_size
    # a slice larger than the file: it grows, and what was written before stays
    journal.claimed((i, 2) for i in range(1, 20_001))
    for i in range(1, 20_001):
        journal.attempting(i)
    grown = journal.path.stat().st_size
    assert grown > size
    (found,) = read_journals(tmp_path)
    assert len(found.claims) == 20_000 and found.begun == set(range(1, 20_001))
    assert journal.read().claims == found.claims

    # recorded: the same file, every byte zero, and the next slice starts at its beginning
    journal.recorded()
    assert journal.path.stat().st_size == grown
    assert journal.path.read_bytes() == bytes(grown)
    journal.claimed([(7, 1)])
    journal.answered(7, is_accepted=False)
    assert journal.path.read_bytes().startswith(b"c 7:1\nr7\n\0")
    assert (read_journals(tmp_path)[0].claims, journal.read().refused) == ({7: 1}, {7})

    # closed with a line in it, the file stays for the sweep
    journal.close()
    assert read_journals(tmp_path)[0].claims == {7: 1}


def _scalar(rt: Runtime, query: Any) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(query).scalar()
