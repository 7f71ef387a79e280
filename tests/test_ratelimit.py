"""Messages-per-second limits: the Redis one shared by every worker, the in-process one."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from mailer.ratelimit import LocalRateLimiter, RedisRateLimiter


def _rate(acquire_all) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    acquire_all()
    return time.monotonic() - started


def test_the_redis_limit_is_shared_by_every_worker() -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    key = f"mailer-test-rate-{uuid.uuid4().hex[:8]}"
    # two "workers" with their own limiter objects draw from one budget of 100 a second
    limiters = [RedisRateLimiter(client, key, 100) for _ in range(2)]

    def worker(limiter: RedisRateLimiter) -> None:
        for _ in range(15):
            limiter.acquire(10)

    def both() -> None:
        threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # 300 messages at 100 a second need three one-second windows, none over budget
    assert _rate(both) >= 1.0
    windows = [int(client.get(k) or 0) for k in client.keys(f"{key}:*")]
    assert sum(windows) == 300
    assert max(windows) <= 100
    client.delete(*client.keys(f"{key}*") or [key])


def test_the_local_limit_splits_requests_larger_than_the_budget() -> None:
    limiter = LocalRateLimiter(40)
    assert _rate(lambda: limiter.acquire(100)) >= 1.0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        LocalRateLimiter(0)
