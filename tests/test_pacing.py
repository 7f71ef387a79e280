"""Per-domain pacing: settings, back-off, concurrency and rate shared through Redis, and a
campaign whose Gmail recipients are throttled (421 4.7.28 from the fault server) while every
other domain is delivered."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select

from mailer import campaigns
from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.models import Contact, Organization, Send
from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage, ReplyKind
from mailer.pacing import (
    DomainPacer,
    MemoryPaceStore,
    RedisPaceStore,
    is_throttling,
    parse_pacing,
)
from mailer.runtime import Runtime
from tests.delivery_fixtures import REDIS_URL, as_user
from tests.smtpd import FaultServer

GMAIL_THROTTLE = "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"


def test_pacing_settings_name_the_bad_part() -> None:
    with pytest.raises(ConfigError, match="MAILER_DOMAIN_CONCURRENCY: no domain group 'gmial'"):
        Settings.from_env({"MAILER_DOMAIN_CONCURRENCY": "gmial=4"}, env_file=None)
    with pytest.raises(ConfigError, match="MAILER_DOMAIN_RATE_PER_S: yahoo='fast'"):
        Settings.from_env({"MAILER_DOMAIN_RATE_PER_S": "yahoo=fast"}, env_file=None)
    pacing = parse_pacing(
        Settings.from_env({"MAILER_DOMAIN_CONCURRENCY": "gmail=4;others=16"}, env_file=None)
    )
    assert pacing.group_of("Pat@GoogleMail.com") == "gmail"
    assert pacing.group_of("pat@client.example") == "others"
    assert pacing.concurrency == {"gmail": 4, "others": 16}


@pytest.mark.parametrize(
    ("code", "enhanced", "reply", "expected"),
    [
        (421, "4.7.28", "unusual rate of unsolicited mail", True),
        (451, "4.7.0", "Message rate exceeded", True),
        (452, "4.5.3", "too many recipients", True),
        (421, "4.7.0", "Try again later", False),
        (451, "4.7.1", "Greylisted", False),
        (550, "5.1.1", "no such user", False),
    ],
)
def test_only_throttling_replies_back_a_domain_off(
    code: int, enhanced: str, reply: str, expected: bool
) -> None:
    result = DeliveryResult(1, Outcome.DEFERRED, ReplyKind.RATE, code, enhanced, reply)
    assert is_throttling(result) is expected


def _message(send_id: int, rcpt: str) -> OutgoingMessage:
    return OutgoingMessage(send_id, "b@cpi.example", rcpt, b"x", f"<{send_id}@cpi.example>")


def test_a_throttled_group_backs_off_exponentially_while_others_go() -> None:
    now = [1000.0]
    pacer = DomainPacer(parse_pacing(Settings()), MemoryPaceStore(), clock=lambda: now[0])
    sent: list[str] = []

    def send(messages: Any) -> list[DeliveryResult]:
        sent.extend(m.rcpt for m in messages)
        return [
            DeliveryResult(m.send_id, Outcome.DEFERRED, ReplyKind.RATE, 421, "4.7.28", "rate")
            if m.rcpt.endswith("gmail.com")
            else DeliveryResult(m.send_id, Outcome.SENT, ReplyKind.OK, 250)
            for m in messages
        ]

    pacer.send([_message(1, "a@gmail.com"), _message(2, "b@client.example")], send)
    results = pacer.send([_message(3, "c@gmail.com"), _message(4, "d@client.example")], send)
    assert sent == ["a@gmail.com", "b@client.example", "d@client.example"]
    assert results[0].reply.startswith("not sent: gmail is backing off until 00:17:40")
    now[0] += 61  # the first back-off (60 s) is over: tried again, throttled again → 120 s
    pacer.send([_message(5, "e@gmail.com")], send)
    assert pacer.store.backoff_until("gmail") == pytest.approx(now[0] + 120)


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    namespace = f"mailer-test-{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{namespace}*"))
    if keys:
        client.delete(*keys)


def test_back_off_and_concurrency_are_shared_by_every_worker_through_redis(
    redis_namespace: str,
) -> None:
    pacing = parse_pacing(Settings(domain_concurrency="gmail=1"))
    one = RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace)
    two = RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace)
    now = time.time()
    assert one.throttled("gmail", now, 60, 3600) == pytest.approx(now + 60)
    assert two.backoff_until("gmail") == pytest.approx(now + 60)
    assert two.throttled("gmail", now, 60, 3600) == pytest.approx(now + 120)
    assert one.backoff_until("yahoo") == 0.0
    token = one.take_slot("gmail", 1, now)
    assert token is not None
    assert two.take_slot("gmail", 1, now) is None
    one.give_slot("gmail", token)
    assert two.take_slot("gmail", 1, now) is not None
    # many threads of "two processes", one slot: never two sends in flight at once
    pacers = [
        DomainPacer(pacing, RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace + "x"))
        for _ in range(2)
    ]
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def send(messages: Any) -> list[DeliveryResult]:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return [DeliveryResult(m.send_id, Outcome.SENT, ReplyKind.OK, 250) for m in messages]

    threads = [
        threading.Thread(target=pacers[i % 2].send, args=([_message(i, "x@gmail.com")], send))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1


@pytest.fixture
def mail_settings(mail_settings: Settings) -> Settings:
    return mail_settings.with_(domain_backoff_s=60)


def test_gmail_throttling_backs_off_gmail_only_while_the_others_are_delivered(
    mail_rt: Runtime,
    workers: Any,
    people: Any,
    make_org: Callable[..., Organization],
    make_contact: Callable[..., Contact],
    smtp_server: FaultServer,
) -> None:
    contacts = []
    for n in range(15):
        org = make_org()
        domain = "gmail.com" if n % 3 == 0 else f"client{n}.example"
        contacts.append(
            make_contact(organization=org, email=f"pat{n}.{uuid.uuid4().hex[:6]}@{domain}")
        )
    gmail = [c.email for c in contacts if c.email.endswith("@gmail.com")]
    for address in gmail:
        smtp_server.on_rcpt(address, GMAIL_THROTTLE, times=None)
    cid = campaigns.create_campaign(
        mail_rt,
        actor=as_user(mail_rt, "mark"),
        name="Paced",
        category="features",
        template="features/benefitelect-enrollment-site",
        rule_text="",
    ).id
    campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )

    deadline = time.monotonic() + 60
    while True:
        workers.tick()
        with mail_rt.sessions() as s:
            rows = s.execute(
                select(Send.email, Send.status, Send.smtp_reply).where(Send.campaign_id == cid)
            ).all()
        others = [r for r in rows if not r.email.endswith("@gmail.com")]
        if all(r.status == "sent" for r in others) and not any(
            r.status in ("queued", "sending") for r in rows
        ):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)
    received = {rcpt for m in smtp_server.messages for rcpt in m.rcpt_tos}
    assert received == {c.email for c in contacts} - set(gmail)
    gmail_rows = [r for r in rows if r.email.endswith("@gmail.com")]
    assert all(r.status == "deferred" for r in gmail_rows)
    # once Gmail said 4.7.28, later Gmail sends never reached the server
    assert sum("backing off" in r.smtp_reply for r in gmail_rows) >= 3, gmail_rows
