"""The Dramatiq broker, built once per process from settings.

`memory://` gives a StubBroker for the embedded default (worker threads in the same process);
`redis://…` gives the RedisBroker that production and the tests with real workers use;
`amqp://…` gives a RabbitmqBroker (publisher confirms on), whose queues are named
`<namespace>.priority` and `<namespace>.bulk` (RabbitMQ has no key namespace of its own).
"""

from __future__ import annotations

import dramatiq
from dramatiq.broker import Consumer
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Retries, TimeLimit

from mailer.config import Settings

#: Bulk marketing mail; service and policy mail never waits behind it.
BULK_QUEUE = "bulk"
PRIORITY_QUEUE = "priority"
QUEUES = (PRIORITY_QUEUE, BULK_QUEUE)
#: A batch taking longer than this is killed and retried (rows are recovered by lease).
BATCH_TIME_LIMIT_MS = 60 * 60 * 1000
#: A worker that stops heart-beating this long has its messages handed to others.
HEARTBEAT_TIMEOUT_MS = 30_000
#: The longest an idle delay-queue consumer sleeps between polls (ms). Only retried batches are
#: delayed, by a second at least (the Retries settings below), so a second more is harmless; the
#: queues themselves keep the worker's short poll (workers.process.IDLE_POLL_MS). Each poll is a
#: Lua script call (~80 µs of worker CPU): the two delay queues of each process polled at 100 ms
#: were half of an idle worker's Redis traffic.
DELAY_QUEUE_POLL_MS = 1_000


class _RedisBroker(RedisBroker):
    """RedisBroker whose delay-queue consumers poll at most every DELAY_QUEUE_POLL_MS when idle."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if dq_name(queue_name) == queue_name:
            timeout = max(timeout, DELAY_QUEUE_POLL_MS)
        return super().consume(queue_name, prefetch, timeout)


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
