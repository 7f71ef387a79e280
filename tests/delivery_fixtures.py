"""Fixtures for delivery tests: settings aimed at a fault SMTP server and a Redis namespace of
the test's own, in-process worker threads on the real RedisBroker, users and audiences.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from mailer.access import Actor, actor_for_username
from mailer.config import Settings
from mailer.models import Contact, Organization, User
from mailer.runtime import Runtime
from tests.smtpd import FaultServer

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def clear_namespace(namespace: str, url: str = REDIS_URL) -> None:
    """Delete every Redis key of a test's namespace (queues, limits, pacing, nudges)."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{namespace}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A Redis key prefix of the test's own, its keys deleted afterwards."""
    namespace = f"mailer-test-{uuid.uuid4().hex[:8]}"
    yield namespace
    clear_namespace(namespace)


def terminate_backend(engine: Engine, pid: int, *, timeout_s: float = 10) -> None:
    """Terminate a PostgreSQL backend and wait until it is gone. Each look is a transaction
    of its own: within one, pg_stat_activity is a snapshot, and a backend still there at the
    first look would be there for good."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        deadline = time.monotonic() + timeout_s
        while admin.scalar(gone, {"pid": pid}):
            assert time.monotonic() < deadline, f"backend {pid} still there {timeout_s} s after"
            time.sleep(0.01)


def as_user(rt: Runtime, username: str) -> Actor:
    """The actor for an existing user, as the CLI would build it from MAILER_USER."""
    with rt.sessions() as session:
        return actor_for_username(session, username)


@pytest.fixture
def broker_url() -> str:
    """The broker delivery tests run on; a test module may parametrize it (RabbitMQ too)."""
    return REDIS_URL


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: FaultServer, broker_url: str) -> Settings:
    """Small batches, short leases and retries in seconds, so faults play out quickly."""
    return settings.with_(
        smtp_url=smtp_server.url + "?timeout_s=5",
        smtp_pool_size=2,
        smtp_local_hostname="mailer.test",
        broker_url=broker_url,
        # RabbitMQ: queues named after the namespace; shared limits still in Redis
        redis_url=REDIS_URL,
        broker_namespace=f"mailer-test-{uuid.uuid4().hex[:8]}",
        batch_size=20,
        record_every=5,
        lease_s=3,
        retry_delays_s=(1,),
        give_up_after_s=3600,
        public_base_url="https://mail.cpi.example",
    )


@pytest.fixture
def mail_rt(rt: Runtime, mail_settings: Settings) -> Runtime:
    return Runtime(mail_settings, rt.engine, rt.sessions)


@pytest.fixture
def workers(mail_rt: Runtime) -> Iterator[Any]:
    """Worker threads in this process, consuming from real Redis."""
    from workers.embedded import EmbeddedWorkers

    embedded = EmbeddedWorkers(mail_rt.settings, mail_rt, threads=2)
    with embedded:
        yield embedded
    if mail_rt.settings.is_rabbitmq:
        delete_rabbitmq_queues(mail_rt.settings)
    clear_namespace(mail_rt.settings.broker_namespace)


@pytest.fixture
def people(make_user: Callable[..., User]) -> dict[str, User]:
    return {
        "admin": make_user(username="ada", role="admin", display_name="Ada Admin"),
        "marketer": make_user(username="mark", role="marketing", display_name="Mark Eting"),
        "manager": make_user(
            username="amy",
            role="account_manager",
            display_name="Amy Manager",
            email="amy@cpi.example",
            phone="541-555-0111",
        ),
        "other_manager": make_user(
            username="otto",
            role="account_manager",
            display_name="Otto Other",
            email="otto@cpi.example",
        ),
    }


@pytest.fixture
def make_audience(
    make_org: Callable[..., Organization], make_contact: Callable[..., Contact]
) -> Callable[..., list[Contact]]:
    """`n` organizations of a kind with `per_org` contacts each."""

    def make(n: int, *, per_org: int = 1, **org_kw: Any) -> list[Contact]:
        contacts = []
        for _ in range(n):
            org = make_org(**org_kw)
            contacts.extend(make_contact(organization=org) for _ in range(per_org))
        return contacts

    return make


def delete_rabbitmq_queues(settings: Settings) -> None:
    """Remove a test's queues (and their delay and dead-letter twins) from RabbitMQ."""
    import pika

    from workers.broker import queue_names

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        for name in queue_names(settings):
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(name + suffix)
    finally:
        connection.close()
