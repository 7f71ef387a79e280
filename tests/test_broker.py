"""workers.broker on real Redis: an idle consumer wakes as soon as a batch is enqueued (a
nudge on the namespace's channel) instead of at its next poll, and the poll still finds what a
lost nudge did not announce."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from mailer.config import Settings
from tests.delivery_fixtures import REDIS_URL
from workers.broker import build_broker

QUEUE = "priority"
#: The idle poll of the workers in these tests: long, so a batch taken well within it was
#: taken because of the nudge.
SLOW_POLL_MS = 3_000


class Taken:
    """An actor on `broker` that records when it ran each message (by its argument)."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.at: dict[int, float] = {}
        self.event = threading.Event()

        def take(n: int) -> None:
            self.at[n] = time.monotonic()
            self.event.set()

        self.actor = dramatiq.actor(actor_name="take", queue_name=QUEUE, broker=broker)(take)


def _broker(namespace: str) -> dramatiq.Broker:
    settings = Settings.from_env(
        {
            "MAILER_BROKER_URL": REDIS_URL,
            "MAILER_BROKER_NAMESPACE": namespace,
            "MAILER_SECRET_KEY": "broker-test-secret-0123456789",
        },
        env_file=None,
    )
    return build_broker(settings)


def _enqueue_from_elsewhere(broker: RedisBroker, n: int) -> float:
    """Enqueue `take(n)` through `broker` (another process's, as the CLI's would be)."""
    started = time.monotonic()
    broker.enqueue(dramatiq.Message(QUEUE, "take", (n,), {}, {}))
    return started


@pytest.fixture
def idle_worker(redis_namespace: str) -> Iterator[tuple[Taken, dramatiq.Worker]]:
    broker = _broker(redis_namespace)
    taken = Taken(broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=SLOW_POLL_MS)
    worker.start()
    time.sleep(0.5)  # booted, its first fetch found nothing: it waits
    yield taken, worker
    worker.stop()


def _wait_taken(taken: Taken, n: int, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    while n not in taken.at and time.monotonic() < deadline:
        taken.event.wait(0.01)
        taken.event.clear()
    return taken.at.get(n)


def test_an_idle_worker_takes_an_enqueued_batch_at_once_not_at_its_next_poll(
    redis_namespace: str, idle_worker: tuple[Taken, dramatiq.Worker]
) -> None:
    # Given a worker idle for a while, polling every 3 s
    taken, _ = idle_worker
    sender = _broker(redis_namespace)
    for n in range(3):
        time.sleep(0.3)
        # When another process enqueues a batch
        started = _enqueue_from_elsewhere(sender, n)
        # Then the worker runs it at once, not at its next poll
        at = _wait_taken(taken, n, SLOW_POLL_MS / 1000 + 5)
        assert at is not None
        assert at - started < 0.5 * SLOW_POLL_MS / 1000, f"batch {n}: {at - started:.3f} s"


def test_a_batch_enqueued_without_a_nudge_is_still_found_by_the_poll(
    redis_namespace: str, idle_worker: tuple[Taken, dramatiq.Worker]
) -> None:
    # Given an enqueue that publishes no nudge (Dramatiq's own broker, or a nudge lost)
    taken, _ = idle_worker
    plain = RedisBroker(url=REDIS_URL, namespace=redis_namespace)
    started = _enqueue_from_elsewhere(plain, 1)
    # Then the worker's poll finds it, within one poll
    at = _wait_taken(taken, 1, SLOW_POLL_MS / 1000 + 5)
    assert at is not None and at - started < SLOW_POLL_MS / 1000 + 1.0


def test_a_finished_batch_makes_room_for_the_next_at_once_not_at_the_next_poll(
    redis_namespace: str, idle_worker: tuple[Taken, dramatiq.Worker]
) -> None:
    # Given six batches enqueued without nudges: the worker's one thread prefetches two at a
    # time, and only its poll (every 3 s) finds the first of them
    taken, _ = idle_worker
    plain = RedisBroker(url=REDIS_URL, namespace=redis_namespace)
    started = time.monotonic()
    for n in range(6):
        _enqueue_from_elsewhere(plain, n)
    # When that poll comes
    first = _wait_taken(taken, 0, SLOW_POLL_MS / 1000 + 5)
    assert first is not None
    # Then each batch finished wakes the consumer for the next ones: all six go within that
    # poll, not one poll for every two
    last = _wait_taken(taken, 5, 2 * SLOW_POLL_MS / 1000)
    assert last is not None, f"taken: {sorted(taken.at)}"
    assert last - first < 0.5 * SLOW_POLL_MS / 1000, f"{last - first:.3f} s after the first"
    assert first - started < SLOW_POLL_MS / 1000 + 1.0


def test_nudges_are_heard_again_after_the_listener_loses_its_connection(
    redis_namespace: str, idle_worker: tuple[Taken, dramatiq.Worker]
) -> None:
    taken, _ = idle_worker
    client = redis.Redis.from_url(REDIS_URL)
    # Given Redis drops the connection the worker process listens for nudges on
    listeners = [c for c in client.client_list() if c["name"] == f"{redis_namespace}:nudge"]
    assert len(listeners) == 1 and listeners[0]["sub"] == "1"
    client.client_kill_filter(_id=listeners[0]["id"])
    time.sleep(1.5)  # the listener notices and subscribes again, on a new connection
    again = [c for c in client.client_list() if c["name"] == f"{redis_namespace}:nudge"]
    assert [c["sub"] for c in again] == ["1"] and again[0]["id"] != listeners[0]["id"]
    # When a batch is enqueued
    started = _enqueue_from_elsewhere(_broker(redis_namespace), 7)
    # Then the worker is woken for it again
    at = _wait_taken(taken, 7, SLOW_POLL_MS / 1000 + 5)
    assert at is not None and at - started < 0.5 * SLOW_POLL_MS / 1000


def test_a_batch_whose_nudge_is_lost_while_the_listener_reconnects_waits_only_a_short_poll(
    redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker polling every 100 ms while it hears no nudges, and every 5 s while it does
    monkeypatch.setattr("workers.broker.NUDGED_POLL_MS", 5_000)
    broker = _broker(redis_namespace)
    taken = Taken(broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        time.sleep(0.5)
        client = redis.Redis.from_url(REDIS_URL)
        listener = [c for c in client.client_list() if c["name"] == f"{redis_namespace}:nudge"]
        # When Redis drops the listener's connection and a batch is enqueued before it is back
        client.client_kill_filter(_id=listener[0]["id"])
        time.sleep(0.2)
        started = _enqueue_from_elsewhere(_broker(redis_namespace), 3)
        # Then the consumer, polling as before nudges meanwhile, takes it within a short poll
        at = _wait_taken(taken, 3, 10)
        assert at is not None and at - started < 0.6, f"{(at or 0) - started:.3f} s"
    finally:
        worker.stop()


def test_batches_a_stopping_worker_puts_back_are_taken_by_another_at_once(
    redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two workers polling every 5 s: one busy with a batch and holding the next,
    # prefetched, and one idle
    monkeypatch.setattr("workers.broker.NUDGED_POLL_MS", 5_000)
    busy_broker, idle_broker = _broker(redis_namespace), _broker(redis_namespace)
    who: dict[int, str] = {}
    for name, broker in (("busy", busy_broker), ("idle", idle_broker)):

        def take(n: int, name: str = name) -> None:
            who[n] = name
            if n == 0:
                time.sleep(2.0)

        dramatiq.actor(actor_name="take", queue_name=QUEUE, broker=broker)(take)
    busy = dramatiq.Worker(busy_broker, worker_threads=1, worker_timeout=100)
    busy.start()
    time.sleep(0.3)
    for n in (0, 1):
        busy_broker.enqueue(dramatiq.Message(QUEUE, "take", (n,), {}, {}))
    time.sleep(0.2)
    idle = dramatiq.Worker(idle_broker, worker_threads=1, worker_timeout=100)
    idle.start()
    stopped = False
    try:
        time.sleep(0.5)
        assert who == {0: "busy"}
        # When the busy one stops: it finishes its batch and puts the prefetched one back
        busy.stop()
        stopped = True
        requeued = time.monotonic()
        # Then the idle one is nudged and takes it at once, not at its next poll
        deadline = requeued + 10
        while 1 not in who and time.monotonic() < deadline:
            time.sleep(0.005)
        assert who.get(1) == "idle"
        assert time.monotonic() - requeued < 1.0
    finally:
        if not stopped:
            busy.stop()
        idle.stop()


def test_the_listener_stops_with_the_worker(redis_namespace: str) -> None:
    broker = _broker(redis_namespace)
    Taken(broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    time.sleep(0.3)
    assert [t for t in threading.enumerate() if t.name == "nudges"]
    worker.stop()
    deadline = time.monotonic() + 5
    while [t for t in threading.enumerate() if t.name == "nudges"]:
        assert time.monotonic() < deadline, "the nudge listener outlived its consumers"
        time.sleep(0.05)
