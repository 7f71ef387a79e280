"""Sign-in throttling per (IP, username): after N failures in a window, refuse for a while.

Redis holds the failures when the broker is Redis, so every web process sees the same count;
otherwise they live in this process (the embedded default, one web process).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
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

    def begin_attempt(self, ip: str, username: str) -> tuple[int, str]:
        """Check and count a try in one atomic step: `(wait_s, "")` when throttled, else
        `(0, attempt_id)` with the try counted as a failure until `reset` or `forgive`.

        Counting before the password is checked is what holds under a burst: concurrent tries
        cannot all see the count below the limit before any of them is recorded.
        """
        ...

    def forgive(self, ip: str, username: str, attempt_id: str) -> None:
        """Stop counting one try begun with `begin_attempt` (it was not a failure)."""
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

    def begin_attempt(self, ip: str, username: str) -> tuple[int, str]:
        now = self._clock()
        key = _key(ip, username)
        with self._lock:
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                oldest_that_counts = times[len(times) - self.max_failures]
                return max(1, int(oldest_that_counts + self.window_s - now + 0.999)), ""
            times.append(now)
            self._failures[key] = times
            return 0, repr(now)

    def forgive(self, ip: str, username: str, attempt_id: str) -> None:
        with self._lock:
            times = self._failures.get(_key(ip, username))
            if times is not None and attempt_id:
                with contextlib.suppress(ValueError):
                    times.remove(float(attempt_id))

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


#: Atomically: drop old failures; if the limit is reached return the score of the oldest one
#: that counts, else add this try (ARGV[4]) and return "".
_BEGIN_ATTEMPT = """
local key, now, window, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local n = redis.call('ZCARD', key)
if n >= limit then
  local oldest = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return oldest[2]
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('EXPIRE', key, window + 1)
return ''
"""


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
        self._begin = client.register_script(_BEGIN_ATTEMPT)

    def begin_attempt(self, ip: str, username: str) -> tuple[int, str]:
        now = self._clock()
        member = f"{now:.6f}:{secrets.token_hex(8)}"
        key = self._prefix + _key(ip, username)
        oldest = self._begin(keys=[key], args=[now, self.window_s, self.max_failures, member])
        if oldest in (b"", "", None):
            return 0, member
        return max(1, int(float(oldest) + self.window_s - now + 0.999)), ""

    def forgive(self, ip: str, username: str, attempt_id: str) -> None:
        if attempt_id:
            self._client.zrem(self._prefix + _key(ip, username), attempt_id)

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
