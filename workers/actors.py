"""Thin actors: JSON ids in, one core call. `setup(settings)` builds the process's wiring.

Each process `mailer worker` starts (`workers.process`) calls `setup` once at start, and so does
`workers.main`, the module for running `dramatiq workers.main` directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dramatiq
import redis

from mailer import delivery
from mailer.config import Settings
from mailer.delivery import Batch
from mailer.errors import ConfigError, TemplateError
from mailer.pacing import make_pacer
from mailer.ratelimit import LocalRateLimiter, RedisRateLimiter
from mailer.runtime import Runtime, open_runtime
from mailer.transports import make_transport
from mailer.transports.relays import rate_limit_name
from workers.broker import build_broker, queue_names

if TYPE_CHECKING:
    from mailer.delivery.deliver import RateLimiter

_log = logging.getLogger("mailer.worker")


class Wiring:
    """Everything a worker process shares, built once at start and passed along: settings,
    broker, the two actors, the runtime (opened on first use), the rate limiter, and each
    worker thread's delivery context (event loop, SMTP pool, journal)."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        self.broker = build_broker(settings)
        self.rate_limiter = _rate_limiter(settings)
        self.pacer = make_pacer(settings)
        self._runtime = runtime
        self._runtime_lock = threading.Lock()
        self._threads = threading.local()
        self.broker.add_middleware(_CloseContexts(self))

        def deliver(campaign_id: int, first_id: int, last_id: int) -> None:
            """Deliver one batch of a campaign's sends."""
            # through the package: a process that only enqueues never loads the engine
            delivery.deliver_batch(self.context(), campaign_id, first_id, last_id)

        priority_queue, bulk_queue = queue_names(settings)
        # lower runs first: a worker takes a waiting priority batch before any bulk one
        self.bulk = dramatiq.actor(
            actor_name="deliver_bulk", queue_name=bulk_queue, broker=self.broker, priority=100
        )(deliver)
        self.priority = dramatiq.actor(
            actor_name="deliver_priority",
            queue_name=priority_queue,
            broker=self.broker,
            priority=0,
        )(deliver)

    def prepare(self) -> None:
        """What a worker process does at start, before it takes batches: compile the policy
        notice's template, for which a notice's first batch would otherwise wait (its first
        message leaves within a second of publishing: docs/performance.md §7). A notice
        template that does not compile is logged; publishing refuses it anyway."""
        from mailer.messages.dkim import DkimSigner
        from mailer.policy import prepare_notice  # workers only: the CLI enqueues

        try:
            prepare_notice(self.settings)
        except TemplateError as exc:
            _log.warning("the policy notice template does not compile: %s", exc)
        # with DKIM on, load the key (and `cryptography`, ~0.1 s) now, not on the first batch
        try:
            DkimSigner.from_settings(self.settings, [])
        except ConfigError as exc:
            _log.warning("cannot sign with DKIM: %s", exc)

    def dispatch(self, batches: Sequence[Batch]) -> None:
        """Enqueue one broker message per batch (never one per recipient)."""
        for batch in batches:
            actor = self.priority if batch.is_priority else self.bulk
            actor.send(*batch.as_args())

    @property
    def runtime(self) -> Runtime:
        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = open_runtime(self.settings)
            return self._runtime

    def context(self) -> delivery.DeliveryContext:
        """This worker thread's delivery context, made on its first batch."""
        ctx: delivery.DeliveryContext | None = getattr(self._threads, "ctx", None)
        if ctx is None:
            rt = self.runtime
            ctx = delivery.DeliveryContext(
                rt,
                lambda: make_transport(rt.settings),
                rate_limiter=self.rate_limiter,
                journal_dir=rt.settings.journal_dir,
                pacer=self.pacer,
            )
            self._threads.ctx = ctx
        return ctx

    def close_context(self) -> None:
        ctx: delivery.DeliveryContext | None = getattr(self._threads, "ctx", None)
        if ctx is not None:
            ctx.close()
            self._threads.ctx = None


def _rate_limiter(settings: Settings) -> RateLimiter | None:
    if settings.rate_limit_per_s <= 0:
        return None
    if not settings.shared_redis_url:
        return LocalRateLimiter(settings.rate_limit_per_s)
    key = f"{settings.broker_namespace}:rate:{rate_limit_name(settings.smtp_url)}"
    client = redis.Redis.from_url(settings.shared_redis_url)
    return RedisRateLimiter(client, key, settings.rate_limit_per_s)


class _CloseContexts(dramatiq.Middleware):
    """Close a worker thread's SMTP connections, event loop and journal when it stops."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: object) -> None:
        self.wiring.close_context()


def setup(settings: Settings, runtime: Runtime | None = None) -> Wiring:
    """Build the broker and declare the actors; once per process (tests: per test)."""
    return Wiring(settings, runtime)
