"""Messages-per-second limits shared by every worker of a relay (Redis) or of one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis


class RedisRateLimiter:
    """A fixed one-second window in Redis: every worker process draws from the same budget."""

    def __init__(self, client: redis.Redis, key: str, per_s: int) -> None:
        if per_s < 1:
            raise ValueError("per_s must be at least 1")
        self._client = client
        self._key = key
        self._per_s = per_s

    def acquire(self, count: int) -> None:
        while count > 0:
            take = min(count, self._per_s)
            self._take(take)
            count -= take

    def _take(self, n: int) -> None:
        while True:
            now = time.time()
            window = f"{self._key}:{int(now)}"
            pipe = self._client.pipeline()
            pipe.incrby(window, n)
            pipe.expire(window, 3)
            used, _ = pipe.execute()
            if int(used) <= self._per_s:
                return
            # over budget: give the tokens back and wait for the next window
            self._client.decrby(window, n)
            time.sleep(max(0.0, 1.0 - (now % 1.0)) + 0.001)


class LocalRateLimiter:
    """The same window kept in one process (embedded default, tests)."""

    def __init__(self, per_s: int, clock: Callable[[], float] = time.time) -> None:
        if per_s < 1:
            raise ValueError("per_s must be at least 1")
        self._per_s = per_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._used = 0

    def acquire(self, count: int) -> None:
        while count > 0:
            take = min(count, self._per_s)
            while not self._try(take):
                now = self._clock()
                time.sleep(max(0.0, 1.0 - (now % 1.0)) + 0.001)
            count -= take

    def _try(self, n: int) -> bool:
        with self._lock:
            window = int(self._clock())
            if window != self._window:
                self._window, self._used = window, 0
            if self._used + n > self._per_s:
                return False
            self._used += n
            return True
