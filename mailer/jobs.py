"""Daily jobs of `mailer scheduler`: retention at a set local time, sign-in cleanup.

Several schedulers may run; a job runs once a day all the same. Each job has a row in
`scheduled_jobs` holding the local date of its last run, and a scheduler claims today's run
with a compare-and-set (`UPDATE … WHERE last_run_on < today`): exactly one of them moves the
date and runs the job. A run that fails is not retried the same day (retention is heavy; a
person reads the log and runs `mailer retention run`). Every run is audited as
`job.<name>`, with what it did or the error.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, or_, update

from mailer.access import SYSTEM
from mailer.access.cleanup import clean_expired
from mailer.audit import record
from mailer.db import insert_ignoring_duplicates, rows_changed
from mailer.models import ScheduledJob, utcnow
from mailer.retention import run_retention
from mailer.runtime import Runtime

_log = logging.getLogger("mailer.jobs")


def _retention(rt: Runtime, now: dt.datetime) -> dict[str, Any]:
    report = run_retention(rt, now=now, actor=SYSTEM)
    return {"cutoff": report.cutoff.isoformat(), **report.counts()}


def _sign_in_cleanup(rt: Runtime, now: dt.datetime) -> dict[str, Any]:
    with rt.sessions.begin() as session:
        return dict(clean_expired(session, rt.settings, now))


def _jobs(rt: Runtime) -> list[tuple[str, str, Callable[[Runtime, dt.datetime], dict[str, Any]]]]:
    """(name, local HH:MM from which it is due each day, function)."""
    jobs: list[tuple[str, str, Callable[[Runtime, dt.datetime], dict[str, Any]]]] = [
        ("sign-in-cleanup", "00:00", _sign_in_cleanup)
    ]
    if rt.settings.retention_at:
        jobs.append(("retention", rt.settings.retention_at, _retention))
    return jobs


def claim(rt: Runtime, name: str, today: dt.date, now: dt.datetime) -> bool:
    """Claim today's run of job `name`; True for exactly one claimant."""
    holder = f"{socket.gethostname()}:{os.getpid()}"
    with rt.sessions.begin() as session:
        insert_ignoring_duplicates(
            session,
            cast(Table, ScheduledJob.__table__),
            [{"name": name, "last_run_on": None, "holder": "", "result": {}}],
        )
        return bool(
            rows_changed(
                session.execute(
                    update(ScheduledJob)
                    .where(
                        ScheduledJob.name == name,
                        or_(ScheduledJob.last_run_on.is_(None), ScheduledJob.last_run_on < today),
                    )
                    .values(last_run_on=today, holder=holder, started_at=now, finished_at=None)
                )
            )
        )


def run_due_jobs(rt: Runtime, now: dt.datetime | None = None) -> dict[str, Any]:
    """Run every job due today and not yet claimed by any scheduler; what each did."""
    now = now or utcnow()
    local = now.astimezone(ZoneInfo(rt.settings.timezone))
    done: dict[str, Any] = {}
    for name, at, job in _jobs(rt):
        hour, minute = (int(x) for x in at.split(":"))
        if (local.hour, local.minute) < (hour, minute):
            continue
        if not claim(rt, name, local.date(), now):
            continue
        try:
            result = job(rt, now)
        except Exception as exc:
            _log.exception("job %s failed", name)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        with rt.sessions.begin() as session:
            session.execute(
                update(ScheduledJob)
                .where(ScheduledJob.name == name)
                .values(finished_at=utcnow(), result=result)
            )
            record(
                session,
                SYSTEM.username,
                f"job.{name}",
                object_type="job",
                object_id=name,
                local_date=local.date().isoformat(),
                **result,
            )
        done[name] = result
    return done
