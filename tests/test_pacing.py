"""Per-domain pacing: settings, back-off, concurrency and rate shared through Redis, and a
campaign whose Gmail recipients are throttled (421 4.7.28 from the fault server) while every
other domain is delivered."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    BACKOFF_READ_EVERY_S,
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


def test_back_off_and_concurrency_are_shared_by_every_worker_through_redis(
    redis_namespace: str,
) -> None:
    pacing = parse_pacing(Settings(domain_concurrency="gmail=1"))
    one = RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace)
    two = RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace)
    now = time.time()
    assert one.throttled("gmail", now, 60, 3600) == pytest.approx(now + 60)
    assert two.backoff_until("gmail") == pytest.approx(now + 60)
    # met while that back-off is in force: the same throttle; met after it: twice as long
    assert two.throttled("gmail", now + 1, 60, 3600) == pytest.approx(now + 60)
    assert two.throttled("gmail", now + 61, 60, 3600) == pytest.approx(now + 61 + 120)
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


def _sent_or_throttled(throttle: set[str]) -> Callable[[Any], list[DeliveryResult]]:
    def send(messages: Any) -> list[DeliveryResult]:
        return [
            DeliveryResult(m.send_id, Outcome.DEFERRED, ReplyKind.RATE, 421, "4.7.28", "rate")
            if m.rcpt.rpartition("@")[2] in throttle
            else DeliveryResult(m.send_id, Outcome.SENT, ReplyKind.OK, 250)
            for m in messages
        ]

    return send


def _workers(
    namespace: str, now: list[float], mono: list[float], count: int = 2
) -> list[DomainPacer]:
    """Pacers as worker processes have them: each its own Redis client and store, on a
    shared wall clock (`now`) and a shared monotonic clock (`mono`) the test moves by hand."""
    return [
        DomainPacer(
            parse_pacing(Settings()),
            RedisPaceStore(redis.Redis.from_url(REDIS_URL), namespace, monotonic=lambda: mono[0]),
            clock=lambda: now[0],
        )
        for _ in range(count)
    ]


def test_a_throttle_one_worker_met_is_honoured_by_another_within_the_read_interval(
    redis_namespace: str,
) -> None:
    now, mono = [time.time()], [100.0]
    one, two = _workers(redis_namespace, now, mono)
    sent = _sent_or_throttled(set())
    two.send([_message(1, "a@gmail.com")], sent)  # two has read gmail's state: no back-off

    # Given one meets a throttle from Gmail
    one.send([_message(2, "b@gmail.com")], _sent_or_throttled({"gmail.com"}))
    # then one honours it at once, and two, which read just before, within the read interval
    assert one.send([_message(3, "c@gmail.com")], sent)[0].outcome is Outcome.DEFERRED
    mono[0] += BACKOFF_READ_EVERY_S
    results = two.send([_message(4, "d@gmail.com"), _message(5, "e@client.example")], sent)
    assert [r.outcome for r in results] == [Outcome.DEFERRED, Outcome.SENT]
    assert results[0].reply.startswith("not sent: gmail is backing off until")

    # and on the real clocks too: a fresh worker, a throttle, the interval, then deferred
    three = DomainPacer(
        parse_pacing(Settings()),
        RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace + "-real"),
    )
    three.send([_message(6, "f@gmail.com")], sent)
    RedisPaceStore(redis.Redis.from_url(REDIS_URL), redis_namespace + "-real").throttled(
        "gmail", time.time(), 60, 3600
    )
    time.sleep(BACKOFF_READ_EVERY_S)
    assert three.send([_message(7, "g@gmail.com")], sent)[0].outcome is Outcome.DEFERRED


def test_a_level_is_cleared_by_any_worker_that_saw_it_and_a_clear_is_never_undone(
    redis_namespace: str,
) -> None:
    now, mono = [time.time()], [100.0]
    one, two = _workers(redis_namespace, now, mono)
    sent = _sent_or_throttled(set())
    level_key = f"{redis_namespace}:pace:gmail:level"
    client = redis.Redis.from_url(REDIS_URL)

    # Given one was throttled twice (level 2: the next back-off would be 240 s)
    one.send([_message(1, "a@gmail.com")], _sent_or_throttled({"gmail.com"}))
    now[0] += 61
    one.send([_message(2, "b@gmail.com")], _sent_or_throttled({"gmail.com"}))
    assert client.get(level_key) == b"2"
    # When the back-off is over and two, which never met a throttle but read the level, gets a
    # slice through
    now[0] += 121
    mono[0] += BACKOFF_READ_EVERY_S
    two.send([_message(3, "c@gmail.com")], sent)
    # Then the level is gone, and one's older view (level set) does not bring it back
    assert client.get(level_key) is None
    one.send([_message(4, "d@gmail.com")], sent)
    assert client.get(level_key) is None
    # and the next throttle, met by either, backs off the base 60 s again
    two.send([_message(5, "e@gmail.com")], _sent_or_throttled({"gmail.com"}))
    assert client.get(level_key) == b"1"
    assert two.store.backoff_until("gmail") == pytest.approx(now[0] + 60)


def test_throttles_met_by_slices_sent_before_the_back_off_was_known_count_once(
    redis_namespace: str,
) -> None:
    now, mono = [time.time()], [100.0]
    first, *others = _workers(redis_namespace, now, mono, count=5)
    throttled = _sent_or_throttled({"gmail.com"})
    for pacer in others:  # each has read gmail's state: no back-off
        pacer.send([_message(1, "a@gmail.com")], _sent_or_throttled(set()))
    # Given one worker meets a throttle, and four others, within their read interval, each send
    # a Gmail slice that meets it too
    first.send([_message(2, "b@gmail.com")], throttled)
    until = first.store.backoff_until("gmail")
    for n, pacer in enumerate(others):
        now[0] += 0.01
        assert pacer.send([_message(3 + n, "c@gmail.com")], throttled)[0].code == 421
    # Then it is one throttle: level 1, the base back-off from the first, which each of them
    # now honours at once
    client = redis.Redis.from_url(REDIS_URL)
    assert client.get(f"{redis_namespace}:pace:gmail:level") == b"1"
    for pacer in others:
        assert pacer.send([_message(8, "d@gmail.com")], throttled)[0].code is None  # deferred
        assert pacer.store.backoff_until("gmail") == until
    # and a throttle met after the back-off doubles it, as documented
    now[0] = until + 1
    mono[0] += BACKOFF_READ_EVERY_S
    assert others[0].send([_message(9, "e@gmail.com")], throttled)[0].code == 421
    assert others[0].store.backoff_until("gmail") == pytest.approx(now[0] + 120)
    assert client.get(f"{redis_namespace}:pace:gmail:level") == b"2"


def test_a_slice_through_during_a_back_off_its_worker_did_not_know_of_keeps_the_level(
    redis_namespace: str,
) -> None:
    now, mono = [time.time()], [100.0]
    one, two = _workers(redis_namespace, now, mono)
    throttled, sent = _sent_or_throttled({"gmail.com"}), _sent_or_throttled(set())
    # Given two read a level during Gmail's first back-off
    one.send([_message(1, "a@gmail.com")], throttled)
    mono[0] += BACKOFF_READ_EVERY_S
    assert two.send([_message(2, "b@gmail.com")], sent)[0].code is None  # deferred
    # When, after it, one meets a throttle again (level 2, 120 s), and two, within its read
    # interval, gets a Gmail slice through
    now[0] += 61
    one.send([_message(3, "c@gmail.com")], throttled)
    assert two.send([_message(4, "d@gmail.com")], sent)[0].code == 250
    # Then the level stays: the next throttle after this back-off is 240 s
    assert redis.Redis.from_url(REDIS_URL).get(f"{redis_namespace}:pace:gmail:level") == b"2"
    now[0] += 121
    assert one.store.throttled("gmail", now[0], 60, 3600) == pytest.approx(now[0] + 240)


@contextmanager
def _redis_commands(namespace: str) -> Iterator[list[str]]:
    """The commands Redis runs on keys of `namespace` meanwhile, as MONITOR reports them."""
    commands: list[str] = []
    stop = f"{namespace}:monitor-stop"
    with redis.Redis.from_url(REDIS_URL).monitor() as monitor:  # watching once this returns

        def watch() -> None:
            while True:
                command = monitor.next_command()["command"]
                if stop in command:
                    return
                if namespace in command:
                    commands.append(command)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            yield commands
        finally:
            redis.Redis.from_url(REDIS_URL).get(stop)
            watcher.join(timeout=10)


def test_no_redis_command_per_slice_while_nothing_is_throttled(redis_namespace: str) -> None:
    now, mono = [time.time()], [100.0]
    workers = _workers(redis_namespace, now, mono)
    sent = _sent_or_throttled(set())
    slice_ = [_message(1, "a@gmail.com"), _message(2, "b@client.example")]

    with _redis_commands(redis_namespace) as warm_up:
        for pacer in workers:
            pacer.send(slice_, sent)
    # the first slice of each worker reads each group once: one MGET, nothing else
    assert len(warm_up) == 4 and all(c.startswith("MGET ") for c in warm_up), warm_up

    with _redis_commands(redis_namespace) as steady:
        for n in range(50):
            workers[n % 2].send(slice_, sent)
            mono[0] += BACKOFF_READ_EVERY_S / 100
    assert steady == []

    with _redis_commands(redis_namespace) as later:
        mono[0] += BACKOFF_READ_EVERY_S
        for n in range(10):
            workers[n % 2].send(slice_, sent)
    assert sorted(c.split()[0] for c in later) == ["MGET"] * 4, later


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
