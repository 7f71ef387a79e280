"""One way to run a delivery transaction: retried with jittered backoff when the database says
try again (deadlock, serialization failure, dropped or refused connection, SQLite busy).

Lock order, which is what keeps PostgreSQL deadlocks out of the hot path by design:

- a transaction that locks send rows locks nothing else first; every claim locks its slice
  in id order (an index scan of `id = ANY(sorted ids)`), so two claims never wait for each other
  in a cycle; the sweep takes rows in id order with `FOR UPDATE SKIP LOCKED`, in chunks of 500,
  one transaction per chunk, and so never waits at all;
- recording results is its own transaction: it never shares one with the claim of new work, so
  losing it cannot cost the results of a slice already sent;
- the campaign row is updated (completion, pause) in a transaction of its own, after the sends.

The retry stays as the safety net for what remains (a restarted server, a failover). It is also
what replaces a delivery thread's dropped connection: those threads keep their connections
(`mailer.db.HeldConnection`) instead of checking one out and pinging it per transaction.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

_log = logging.getLogger("mailer.delivery")

T = TypeVar("T")

#: SQLSTATEs that mean "run the transaction again": serialization failure, deadlock.
_RETRY_SQLSTATES = {"40001", "40P01"}
#: First backoff, and the cap on each further one (doubled per attempt, full jitter).
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 5.0
#: How long a transaction keeps being retried before the error is passed on (a worker's
#: batch is then retried by the broker; the scheduler's loop logs it and sweeps again).
DEFAULT_MAX_WAIT_S = 120.0


def is_retryable(exc: BaseException) -> bool:
    """A deadlock, a serialization failure, a lost or refused connection, or SQLite busy."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _RETRY_SQLSTATES:
        return True
    if sqlstate and (sqlstate.startswith("08") or sqlstate.startswith("57P")):
        return True  # connection exception; admin shutdown, crash shutdown, cannot connect now
    if isinstance(exc, InterfaceError):
        return True  # psycopg: the connection is closed
    if isinstance(exc, OperationalError):
        # no SQLSTATE: refused or dropped connection (psycopg), database is locked (SQLite)
        return sqlstate is None
    return False


def in_transaction(
    sessions: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    what: str,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `work(session)` in a transaction, committing on success; run it again after a
    retryable error (see `is_retryable`) until `max_wait_s` have passed.

    `work` must be safe to run again from the start: nothing it did in a failed attempt stays.
    """
    deadline = time.monotonic() + max_wait_s
    attempt = 0
    while True:
        try:
            with sessions.begin() as session:
                return work(session)
        except DBAPIError as exc:
            if not is_retryable(exc) or time.monotonic() >= deadline:
                raise
            attempt += 1
            delay = random.uniform(0, min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2**attempt))
            _log.warning(
                "%s: %s; trying again in %.2f s (attempt %d)",
                what,
                _first_line(exc),
                delay,
                attempt + 1,
            )
            sleep(delay)


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return f"{type(exc.orig).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
