"""The Dramatiq broker, built once per process from settings.

`memory://` gives a StubBroker for the embedded default (worker threads in the same process);
`redis://…` gives the RedisBroker that production and the tests with real workers use;
`amqp://…` gives a RabbitmqBroker (publisher confirms on), whose queues are named
`<namespace>.priority` and `<namespace>.bulk` (RabbitMQ has no key namespace of its own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Retries, TimeLimit

from mailer.config import Settings

_log = logging.getLogger("mailer.worker")

#: Bulk marketing mail; service and policy mail never waits behind it.
BULK_QUEUE = "bulk"
PRIORITY_QUEUE = "priority"
QUEUES = (PRIORITY_QUEUE, BULK_QUEUE)
#: A batch taking longer than this is killed and retried (rows are recovered by lease).
BATCH_TIME_LIMIT_MS = 60 * 60 * 1000
#: A worker that stops heart-beating this long has its messages handed to others.
HEARTBEAT_TIMEOUT_MS = 30_000
#: The longest an idle delay-queue consumer sleeps between polls (ms). Only retried batches are
#: delayed, by a second at least (the Retries settings below), so a second more is harmless.
#: Each poll is a Lua script call (~80 µs of worker CPU on a fast machine, ~0.8 ms on a slow
#: one): the two delay queues of each process polled at 100 ms were half of an idle worker's
#: Redis traffic.
DELAY_QUEUE_POLL_MS = 1_000
#: How often a queue's consumer fetches when nothing wakes it (ms). A nudge wakes it for a batch
#: enqueued, and its own process's threads wake it when they finish one (room to prefetch), so
#: this poll only finds a batch whose nudge was lost (the listener reconnecting): polled every
#: 100 ms instead, the two queues of each process made ~770 fetches in a run of 200 batches,
#: ~4 % of a worker's time (docs/performance.md §16).
NUDGED_POLL_MS = 1_000


#: How long the nudge listener waits for a message before it looks whether to stop (s).
_LISTEN_S = 1.0


class _RedisBroker(RedisBroker):
    """RedisBroker whose idle consumers wake as soon as a batch is enqueued, and whose
    delay-queue consumers poll at most every DELAY_QUEUE_POLL_MS when idle.

    Dramatiq's Redis consumer sleeps between polls of an empty queue (up to the worker's
    timeout, workers.process.IDLE_POLL_MS): a batch enqueued into idle workers waited for the
    next poll, ~50 ms on average, and a policy notice's first message must leave within a
    second of publishing. Every enqueue also publishes the queue's name on the namespace's
    nudge channel (one PUBLISH per batch of 500 sends); in each consuming process one thread
    listens (`_Nudges`) and wakes that queue's consumers, which then fetch at once; a thread
    that finishes a batch wakes its queue's consumer too. Nudges are fire-and-forget: one lost
    (the listener reconnecting) only means waiting for the poll, every NUDGED_POLL_MS, and the
    listener wakes every consumer once it hears again.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nudge_channel = f"{self.namespace}:nudge"
        self._nudges: _Nudges | None = None
        self._nudges_lock = threading.Lock()

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:  # a delayed one waits a second at least: its consumer polls for it
            self.nudge(message.queue_name)
        return enqueued

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if dq_name(queue_name) == queue_name:
            return super().consume(queue_name, prefetch, max(timeout, DELAY_QUEUE_POLL_MS))
        # the consumer itself never sleeps (timeout 0); _NudgedConsumer waits for a nudge
        consumer = super().consume(queue_name, prefetch, 0)
        return _NudgedConsumer(self, consumer, queue_name, timeout)

    def wake_event(self, queue_name: str) -> threading.Event:
        """An event set whenever a batch is enqueued on `queue_name` (by any process), for
        one consumer; `forget` it when the consumer closes."""
        with self._nudges_lock:
            if self._nudges is None:
                self._nudges = _Nudges(self.client, self.nudge_channel)
            return self._nudges.add(queue_name)

    def hears_nudges(self) -> bool:
        """Whether the nudge listener is subscribed and hearing: while it is not, consumers
        poll at their short timeout, as before nudges."""
        nudges = self._nudges
        return nudges is not None and nudges.hearing.is_set()

    def nudge(self, queue_name: str) -> None:
        """Tell the consumers of `queue_name`, in every process, that it has a batch."""
        self.client.publish(self.nudge_channel, queue_name)

    def forget(self, queue_name: str, event: threading.Event) -> None:
        with self._nudges_lock:
            if self._nudges is not None and self._nudges.remove(queue_name, event):
                self._nudges = None  # its last consumer closed: the listener stops


class _Nudges:
    """One thread subscribed to the nudge channel, setting the wake events of the consumers of
    the queue each message names; it stops once the last of them is removed."""

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.channel = channel
        self._events: dict[str, set[threading.Event]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        #: Set while subscribed with nothing failing: nudges are heard.
        self.hearing = threading.Event()
        # a connection of its own, named after the channel: `CLIENT LIST` shows who listens
        pool = client.connection_pool
        self._pool = redis.ConnectionPool(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "client_name": channel},
        )
        self._pubsub = redis.Redis(connection_pool=self._pool).pubsub(
            ignore_subscribe_messages=True
        )
        try:
            # subscribed before any consumer's first fetch: no enqueue after it goes unheard
            self._pubsub.subscribe(channel)
            self.hearing.set()
        except redis.RedisError as exc:  # Redis down: the consumers will say so too
            _log.warning("cannot listen for nudges yet (%s); will keep trying", exc)
        threading.Thread(target=self._listen, name="nudges", daemon=True).start()

    def add(self, queue_name: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events.setdefault(queue_name, set()).add(event)
        return event

    def remove(self, queue_name: str, event: threading.Event) -> bool:
        """Forget a consumer's event; True when none is left (the listener then stops)."""
        with self._lock:
            self._events.get(queue_name, set()).discard(event)
            if any(self._events.values()):
                return False
        self._stopped.set()
        return True

    def _listen(self) -> None:
        failing = False
        try:
            while not self._stopped.is_set():
                try:
                    if not self._pubsub.channels:  # Redis was down when we started
                        self._pubsub.subscribe(self.channel)
                    # after a lost connection redis-py reconnects and subscribes again here
                    message = self._pubsub.get_message(timeout=_LISTEN_S)
                    if failing:  # what was enqueued meanwhile went unannounced
                        self.hearing.set()
                        self._wake_all()
                    failing = False
                except redis.RedisError as exc:
                    # meanwhile the consumers poll at their short timeout, as before nudges
                    self.hearing.clear()
                    if not failing:
                        _log.warning("nudges not heard (%s); will keep trying", exc)
                    failing = True
                    self._stopped.wait(_LISTEN_S)
                    continue
                if message is not None and message["type"] == "message":
                    self._wake(message["data"].decode())
        finally:
            self._pubsub.close()
            self._pool.disconnect()

    def _wake_all(self) -> None:
        with self._lock:
            names = list(self._events)
        for name in names:
            self._wake(name)

    def _wake(self, queue_name: str) -> None:
        with self._lock:
            events = list(self._events.get(queue_name, ()))
        for event in events:
            event.set()


class _NudgedConsumer(Consumer):
    """Dramatiq's Redis consumer, fetching when it is nudged (a batch enqueued), when one of
    this process's threads has finished a batch (room to prefetch another), or at the latest
    every NUDGED_POLL_MS, the poll that finds what a lost nudge did not announce (every
    `timeout_ms` while the listener is not hearing). Between fetches it returns None every
    `timeout_ms`, so its thread still looks that often whether to stop, without asking Redis."""

    def __init__(
        self, broker: _RedisBroker, consumer: Consumer, queue_name: str, timeout_ms: int
    ) -> None:
        self._broker = broker
        self._consumer = consumer
        self._queue_name = queue_name
        self._timeout_s = timeout_ms / 1000
        self._poll_s = max(timeout_ms, NUDGED_POLL_MS) / 1000
        self._fetched_at = -self._poll_s
        self._woken = broker.wake_event(queue_name)

    def __next__(self) -> MessageProxy | None:
        if not self._is_due():
            self._woken.wait(self._timeout_s)
            if not self._is_due():
                return None
        # cleared before the fetch: a nudge arriving during it makes the next call fetch again
        self._woken.clear()
        message = next(self._consumer)
        if message is None:
            self._fetched_at = time.monotonic()
        else:
            self._woken.set()  # what was fetched with it is taken before any wait
        return message

    def _is_due(self) -> bool:
        if self._woken.is_set():
            return True
        poll_s = self._poll_s if self._broker.hears_nudges() else self._timeout_s
        return time.monotonic() - self._fetched_at >= poll_s

    def ack(self, message: MessageProxy) -> None:
        self._consumer.ack(message)
        self._woken.set()  # room for another batch: fetch it now, not at the next poll

    def nack(self, message: MessageProxy) -> None:
        self._consumer.nack(message)
        self._woken.set()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Put prefetched batches back (the worker stopping), and nudge: another process's idle
        consumer takes them at once, not at its next poll."""
        messages = list(messages)
        self._consumer.requeue(messages)
        if messages:
            try:
                self._broker.nudge(self._queue_name)
            except redis.RedisError as exc:  # they are back on the queue: the poll finds them
                _log.warning("requeued %d batches without a nudge (%s)", len(messages), exc)

    def close(self) -> None:
        self._broker.forget(self._queue_name, self._woken)
        self._consumer.close()


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.is_embedded_broker:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
    elif settings.is_rabbitmq:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # confirmed publishes: a batch enqueued is on the broker, as with Redis
        broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    else:
        broker = _RedisBroker(
            url=settings.broker_url,
            namespace=settings.broker_namespace,
            heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
            maintenance_chance=100,
        )
    for middleware in list(broker.middleware):
        if isinstance(middleware, Retries):
            # a failing batch (database down …) is retried; SMTP retries live in the send log
            middleware.max_retries = 20
            middleware.min_backoff = 1_000
            middleware.max_backoff = 5 * 60_000
        if isinstance(middleware, TimeLimit):
            middleware.time_limit = BATCH_TIME_LIMIT_MS
    dramatiq.set_broker(broker)
    return broker


def queue_names(settings: Settings) -> tuple[str, str]:
    """(priority, bulk) queue names on this broker."""
    if settings.is_rabbitmq:
        return (
            f"{settings.broker_namespace}.{PRIORITY_QUEUE}",
            f"{settings.broker_namespace}.{BULK_QUEUE}",
        )
    return PRIORITY_QUEUE, BULK_QUEUE


def queue_depths(settings: Settings) -> dict[str, dict[str, int]]:
    """Per queue: batches waiting, taken by a worker and not yet done, and delayed (retries)."""
    if settings.is_rabbitmq:
        return _rabbitmq_depths(settings)
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    ns = settings.broker_namespace
    depths: dict[str, dict[str, int]] = {}
    for queue in QUEUES:
        pipe = client.pipeline()
        pipe.llen(f"{ns}:{queue}")
        pipe.hlen(f"{ns}:{queue}.msgs")
        pipe.hlen(f"{ns}:{queue}.DQ.msgs")
        waiting, total, delayed = pipe.execute()
        depths[queue] = {
            "waiting": int(waiting),
            "in_progress": max(0, int(total) - int(waiting)),
            "delayed": int(delayed),
        }
    return depths


def _rabbitmq_depths(settings: Settings) -> dict[str, dict[str, int]]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        depths: dict[str, dict[str, int]] = {}
        for queue, name in zip(QUEUES, queue_names(settings), strict=True):
            counts = []
            for suffix in ("", ".DQ"):
                try:
                    declared = channel.queue_declare(name + suffix, passive=True)
                    counts.append(int(declared.method.message_count))
                except pika.exceptions.ChannelClosedByBroker:
                    counts.append(0)  # not declared yet: nothing enqueued
                    channel = connection.channel()
            # RabbitMQ counts only ready messages; the ones a worker holds are unacknowledged
            depths[queue] = {"waiting": counts[0], "in_progress": 0, "delayed": counts[1]}
        return depths
    finally:
        connection.close()
