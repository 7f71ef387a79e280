"""Thin actors: JSON ids in, one core call. `setup(settings)` declares them on the broker.

`dramatiq workers.actors` (what `mailer worker` runs) imports this module, which builds the
broker from the environment.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import dramatiq
import redis

from mailer.config import Settings
from mailer.delivery import Batch, DeliveryContext, deliver_batch
from mailer.ratelimit import LocalRateLimiter, RedisRateLimiter
from mailer.runtime import Runtime, open_runtime
from mailer.transports import make_transport
from mailer.transports.relays import rate_limit_name
from workers.broker import BULK_QUEUE, PRIORITY_QUEUE, build_broker


@dataclass
class Wiring:
    """The broker, the two actors and the process's runtime."""

    settings: Settings
    broker: dramatiq.Broker
    bulk: dramatiq.Actor
    priority: dramatiq.Actor
    runtime: Runtime | None = None

    def dispatch(self, batches: Sequence[Batch]) -> None:
        """Enqueue one broker message per batch (never one per recipient)."""
        for batch in batches:
            actor = self.priority if batch.is_priority else self.bulk
            actor.send(*batch.as_args())

    def get_runtime(self) -> Runtime:
        if self.runtime is None:
            self.runtime = open_runtime(self.settings)
        return self.runtime


_local = threading.local()
_wiring: Wiring | None = None


def _context(wiring: Wiring) -> DeliveryContext:
    ctx: DeliveryContext | None = getattr(_local, "ctx", None)
    if ctx is None or ctx.rt is not wiring.get_runtime():
        rt = wiring.get_runtime()
        ctx = DeliveryContext(
            rt, lambda: make_transport(rt.settings), rate_limiter=_rate_limiter(wiring.settings)
        )
        _local.ctx = ctx
    return ctx


_limiters: dict[str, object] = {}


def _rate_limiter(settings: Settings) -> RedisRateLimiter | LocalRateLimiter | None:
    if settings.rate_limit_per_s <= 0:
        return None
    key = f"{settings.broker_namespace}:rate:{rate_limit_name(settings.smtp_url)}"
    if key not in _limiters:
        if settings.broker_url.startswith("redis"):
            client = redis.Redis.from_url(settings.broker_url)
            _limiters[key] = RedisRateLimiter(client, key, settings.rate_limit_per_s)
        else:
            _limiters[key] = LocalRateLimiter(settings.rate_limit_per_s)
    return _limiters[key]  # type: ignore[return-value]


class _CloseContexts(dramatiq.Middleware):
    """Close a worker thread's SMTP connections and event loop when the thread stops."""

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: object) -> None:
        ctx: DeliveryContext | None = getattr(_local, "ctx", None)
        if ctx is not None:
            ctx.close()
            _local.ctx = None


def setup(settings: Settings, runtime: Runtime | None = None) -> Wiring:
    """Build the broker and declare the actors; call once per process (tests: per test)."""
    global _wiring
    broker = build_broker(settings)
    broker.add_middleware(_CloseContexts())

    def deliver(campaign_id: int, first_id: int, last_id: int) -> None:
        """Deliver one batch of a campaign's sends."""
        assert _wiring is not None
        deliver_batch(_context(_wiring), campaign_id, first_id, last_id)

    # lower runs first: a worker takes a waiting priority batch before any bulk one
    bulk = dramatiq.actor(
        actor_name="deliver_bulk", queue_name=BULK_QUEUE, broker=broker, priority=100
    )(deliver)
    priority = dramatiq.actor(
        actor_name="deliver_priority", queue_name=PRIORITY_QUEUE, broker=broker, priority=0
    )(deliver)
    _wiring = Wiring(settings, broker, bulk, priority, runtime)
    _local.__dict__.clear()
    return _wiring


def current() -> Wiring:
    if _wiring is None:
        raise RuntimeError("workers.actors.setup(settings) has not run in this process")
    return _wiring
