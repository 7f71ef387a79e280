"""The Dramatiq broker, built once per process from settings.

`memory://` gives a StubBroker for the embedded default (worker threads in the same process);
`redis://…` gives the RedisBroker that production and the tests with real workers use.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
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


def build_broker(settings: Settings) -> dramatiq.Broker:
    if settings.is_embedded_broker:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
    else:
        broker = RedisBroker(
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


def queue_depths(settings: Settings) -> dict[str, dict[str, int]]:
    """Per queue: batches waiting, taken by a worker and not yet done, and delayed (retries)."""
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
