"""Sign-in throttling per (IP, username): after N failures in a window, refuse for a while.

Redis holds the failures when the broker is Redis, so every web process sees the same count;
otherwise they live in this process (the embedded default, one web process).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import redis

from mailer.config import Settings


class LoginThrottle(Protocol):
    def retry_after_s(self, ip: str, username: str) -> int:
        """Seconds until another try is allowed; 0 when it is allowed now."""
        ...

    def record_failure(self, ip: str, username: str) -> None: ...

    def reset(self, ip: str, username: str) -> None: ...


def _key(ip: str, username: str) -> str:
    # hashed: usernames typed at a login form are arbitrary text, keys stay short and uniform
    return hashlib.sha256(f"{ip}\0{username.strip().lower()}".encode()).hexdigest()[:32]


class MemoryLoginThrottle:
    """Failures kept in this process (a sliding window of timestamps per key)."""

    def __init__(
        self, max_failures: int, window_s: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after_s(self, ip: str, username: str) -> int:
        now = self._clock()
        with self._lock:
            times = self._recent(_key(ip, username), now)
            if len(times) < self.max_failures:
                return 0
            oldest_that_counts = times[len(times) - self.max_failures]
            return max(1, int(oldest_that_counts + self.window_s - now + 0.999))

    def record_failure(self, ip: str, username: str) -> None:
        now = self._clock()
        key = _key(ip, username)
        with self._lock:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            if len(self._failures) > 100_000:  # a flood of distinct keys: drop the stale ones
                for stale in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                    del self._failures[stale]

    def reset(self, ip: str, username: str) -> None:
        with self._lock:
            self._failures.pop(_key(ip, username), None)


class RedisLoginThrottle:
    """Failures in a Redis sorted set per key, shared by every process using the same Redis."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        max_failures: int,
        window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = f"{namespace}:login-failures:"
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock

    def retry_after_s(self, ip: str, username: str) -> int:
        now = self._clock()
        key = self._prefix + _key(ip, username)
        pipe = self._client.pipeline()
        pipe.zremrangebyscore(key, "-inf", now - self.window_s)
        pipe.zrange(key, 0, -1, withscores=True)
        _, entries = pipe.execute()
        if len(entries) < self.max_failures:
            return 0
        oldest_that_counts = float(entries[len(entries) - self.max_failures][1])
        return max(1, int(oldest_that_counts + self.window_s - now + 0.999))

    def record_failure(self, ip: str, username: str) -> None:
        now = self._clock()
        key = self._prefix + _key(ip, username)
        pipe = self._client.pipeline()
        pipe.zremrangebyscore(key, "-inf", now - self.window_s)
        # the member must be unique per failure; the score is the time
        pipe.zadd(key, {f"{now:.6f}:{time.perf_counter_ns()}": now})
        pipe.expire(key, self.window_s + 1)
        pipe.execute()

    def reset(self, ip: str, username: str) -> None:
        self._client.delete(self._prefix + _key(ip, username))


def make_login_throttle(settings: Settings) -> LoginThrottle:
    """Redis-backed when there is a shared Redis (the broker's or MAILER_REDIS_URL), else
    in-process."""
    url = settings.shared_redis_url
    if url:
        client = redis.Redis.from_url(url)
        return RedisLoginThrottle(
            client,
            settings.broker_namespace,
            settings.login_max_failures,
            settings.login_failure_window_s,
        )
    return MemoryLoginThrottle(settings.login_max_failures, settings.login_failure_window_s)
