"""Daily jobs of the scheduler: retention at the configured local time, run by exactly one of
several schedulers, and cleanup of ended sessions and dead API tokens; each run audited
(SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from sqlalchemy import select

from mailer.jobs import claim, run_due_jobs
from mailer.models import ApiToken, AuditEvent, LoginSession, ScheduledJob, User
from mailer.runtime import Runtime

# 03:00 in Los Angeles (PST, UTC-8) on 2026-11-30
AT_3AM = dt.datetime(2026, 11, 30, 11, 0, tzinfo=dt.UTC)


def _audited(rt: Runtime, action: str) -> list[AuditEvent]:
    with rt.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_retention_runs_once_a_day_from_its_local_time(rt: Runtime) -> None:
    assert rt.settings.retention_at == "03:30"
    assert "retention" not in run_due_jobs(rt, AT_3AM)
    done = run_due_jobs(rt, AT_3AM + dt.timedelta(minutes=31))
    assert "cutoff" in done["retention"]
    assert "retention" not in run_due_jobs(rt, AT_3AM + dt.timedelta(hours=5))
    # the next local day, again once
    assert "retention" in run_due_jobs(rt, AT_3AM + dt.timedelta(days=1, minutes=40))
    (first, second) = _audited(rt, "job.retention")
    assert first.actor == "system" and first.details["local_date"] == "2026-11-30"
    assert second.details["local_date"] == "2026-12-01"
    assert len(_audited(rt, "retention.run")) == 2  # retention's own audit, by the system


def test_of_several_schedulers_exactly_one_claims_the_day(rt: Runtime) -> None:
    won: list[bool] = []
    barrier = threading.Barrier(6)

    def scheduler() -> None:
        barrier.wait()
        won.append(claim(rt, "retention", dt.date(2026, 11, 30), AT_3AM))

    threads = [threading.Thread(target=scheduler) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 5 + [True]
    with rt.sessions() as s:
        row = s.get_one(ScheduledJob, "retention")
        assert row.last_run_on == dt.date(2026, 11, 30) and row.holder


def test_ended_sessions_and_long_dead_tokens_are_cleaned(
    rt: Runtime, make_user: Callable[..., User]
) -> None:
    user = make_user()
    now = AT_3AM
    with rt.sessions.begin() as s:
        s.add_all(
            [
                LoginSession(id_hash="a" * 64, user_id=user.id, created_at=now, last_seen_at=now),
                LoginSession(
                    id_hash="b" * 64,
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now - dt.timedelta(hours=1),
                ),  # idle too long
                LoginSession(
                    id_hash="c" * 64,
                    user_id=user.id,
                    created_at=now,
                    last_seen_at=now,
                    revoked_at=now,
                ),
                ApiToken(
                    public_id="live",
                    secret_hash="x" * 64,
                    user_id=user.id,
                    name="live",
                    created_by="t",
                    expires_at=now + dt.timedelta(days=10),
                ),
                ApiToken(
                    public_id="recent",
                    secret_hash="x" * 64,
                    user_id=user.id,
                    name="r",
                    created_by="t",
                    expires_at=now - dt.timedelta(days=2),
                ),
                ApiToken(
                    public_id="old",
                    secret_hash="x" * 64,
                    user_id=user.id,
                    name="o",
                    created_by="t",
                    expires_at=now - dt.timedelta(days=40),
                ),
            ]
        )
    done = run_due_jobs(rt, now)
    assert done["sign-in-cleanup"] == {"sessions": 2, "api_tokens": 1}
    with rt.sessions() as s:
        assert [x.id_hash[0] for x in s.scalars(select(LoginSession))] == ["a"]
        assert sorted(t.public_id for t in s.scalars(select(ApiToken))) == ["live", "recent"]
    (event,) = _audited(rt, "job.sign-in-cleanup")
    assert event.details["sessions"] == 2
