"""Per-domain pacing: concurrency, rate and back-off per recipient domain group.

Big mailbox providers throttle a sender as a whole (Gmail's `421 4.7.28`), so pacing is per
*group* of domains (gmail, microsoft, yahoo, others — MAILER_DOMAIN_GROUPS), shared by every
worker: through Redis when the broker is Redis, in the process otherwise.

- `MAILER_DOMAIN_CONCURRENCY`: SMTP sends of a group in flight at once, across all workers;
- `MAILER_DOMAIN_RATE_PER_S`: messages per second of a group, across all workers;
- a throttling reply (`421 4.7.28`, `4.7.0 … rate`, `452 4.5.3`) stops that group's mail for
  MAILER_DOMAIN_BACKOFF_S, doubling with each further throttle (up to MAILER_DOMAIN_BACKOFF_MAX_S)
  and forgotten after a slice goes through unthrottled. Meanwhile the group's sends are deferred
  without touching the network (the sweep retries them) and every other group keeps going. A
  throttle met while the group's back-off is already in force (a slice that went out before its
  worker knew of it) is the same throttle: it neither doubles nor lengthens the back-off; nor
  does such a slice going through unthrottled forget the level.

Through Redis, the back-off costs nothing per slice while no group is throttled: each process
reads a group's back-off (and whether a throttle level is set) at most every
BACKOFF_READ_EVERY_S (250 ms), in one MGET, and keeps it in memory. So a throttle another worker
process met is honoured here within 250 ms (slices already in flight, here or there, are sent
either way, as before); a throttle this process met is honoured at once. The level is cleared
(a script: DEL unless a back-off is in force) only when this process has reason to think one is
set: it met a throttle itself, or its last read showed one. Concurrency slots and rate windows
cost Redis calls only for the groups MAILER_DOMAIN_CONCURRENCY or MAILER_DOMAIN_RATE_PER_S name.

`DomainPacer.send(messages, send)` is the hook a worker's DeliveryContext calls around its
transport.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mailer.config import Settings
from mailer.errors import ConfigError
from mailer.outgoing import DeliveryResult, Outcome, OutgoingMessage, ReplyKind

#: The group of every domain not named in MAILER_DOMAIN_GROUPS.
OTHERS = "others"
#: How long a worker waits for a concurrency slot before deferring the group's sends.
SLOT_WAIT_S = 30.0
#: A slot a crashed worker never gave back is free again after this.
SLOT_TTL_S = 300.0
#: How stale a process's view of a group's back-off in Redis may be: it is read again after
#: this long, so a throttle another process met is honoured here within it.
BACKOFF_READ_EVERY_S = 0.25
_THROTTLE = re.compile(r"^(421 4\.7\.28|4\d\d 4\.7\.0 .*\brate\b|452 4\.5\.3)", re.IGNORECASE)


@dataclass(frozen=True)
class Pacing:
    groups: dict[str, str]  #: domain → group
    concurrency: dict[str, int]
    rate_per_s: dict[str, int]
    backoff_s: int
    backoff_max_s: int

    def group_of(self, address: str) -> str:
        domain = address.rpartition("@")[2].lower()
        return self.groups.get(domain, OTHERS)


def _pairs(name: str, raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"MAILER_{name.upper()}: {part.strip()!r} is not group=value; write e.g. "
                "'gmail=4;others=16'"
            )
        found[key.strip().lower()] = value.strip()
    return found


def _numbers(name: str, raw: str, known: set[str]) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for group, value in _pairs(name, raw).items():
        if group not in known:
            raise ConfigError(
                f"MAILER_{name.upper()}: no domain group {group!r}; the groups are "
                f"{', '.join(sorted(known))} (MAILER_DOMAIN_GROUPS)"
            )
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(
                f"MAILER_{name.upper()}: {group}={value!r} must be a whole number ≥ 1"
            )
        numbers[group] = int(value)
    return numbers


def parse_pacing(settings: Settings) -> Pacing:
    """The pacing settings, checked; ConfigError naming the setting and the fix."""
    groups: dict[str, str] = {}
    for group, domains in _pairs("domain_groups", settings.domain_groups).items():
        for domain in domains.split(","):
            if domain.strip():
                groups[domain.strip().lower()] = group
    known = set(groups.values()) | {OTHERS}
    if settings.domain_backoff_s < 1 or settings.domain_backoff_max_s < settings.domain_backoff_s:
        raise ConfigError(
            "MAILER_DOMAIN_BACKOFF_S must be at least 1 and MAILER_DOMAIN_BACKOFF_MAX_S at least "
            "as long"
        )
    return Pacing(
        groups,
        _numbers("domain_concurrency", settings.domain_concurrency, known),
        _numbers("domain_rate_per_s", settings.domain_rate_per_s, known),
        settings.domain_backoff_s,
        settings.domain_backoff_max_s,
    )


def is_throttling(result: DeliveryResult) -> bool:
    """Whether a reply tells us to slow down for the whole domain, not just this message."""
    if result.code is None or result.outcome is Outcome.SENT:
        return False
    return bool(_THROTTLE.match(f"{result.code} {result.enhanced} {result.reply}".strip()))


class PaceStore(Protocol):
    """Where pacing state lives: Redis for every worker, or memory for one process."""

    def backoff_until(self, group: str) -> float:
        """Epoch seconds the group backs off until (0.0: none); through Redis, up to
        BACKOFF_READ_EVERY_S behind a throttle another process met."""

    def throttled(self, group: str, now: float, base_s: int, max_s: int) -> float:
        """A throttling reply: back off, twice as long as last time unless the last back-off is
        still in force (then this is the same throttle); when the back-off ends."""

    def cleared(self, group: str, now: float) -> None:
        """A slice went through unthrottled: the next throttle starts at the base back-off,
        unless a back-off is in force (the slice went out before its worker knew of it)."""

    def take_slot(self, group: str, limit: int, now: float) -> str | None: ...
    def give_slot(self, group: str, token: str) -> None: ...
    def take_rate(self, group: str, per_s: int, count: int, now: float) -> bool: ...


class MemoryPaceStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self._level: dict[str, int] = defaultdict(int)
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)
        self._windows: dict[str, tuple[int, int]] = {}

    def backoff_until(self, group: str) -> float:
        with self._lock:
            return self._until.get(group, 0.0)

    def throttled(self, group: str, now: float, base_s: int, max_s: int) -> float:
        with self._lock:
            current = self._until.get(group, 0.0)
            if current > now:
                return current
            level = self._level[group]
            self._level[group] = level + 1
            self._until[group] = now + min(max_s, base_s * 2**level)
            return self._until[group]

    def cleared(self, group: str, now: float) -> None:
        with self._lock:
            if self._until.get(group, 0.0) <= now:
                self._level.pop(group, None)

    def take_slot(self, group: str, limit: int, now: float) -> str | None:
        with self._lock:
            slots = self._slots[group]
            for token, taken in list(slots.items()):
                if taken < now - SLOT_TTL_S:
                    del slots[token]
            if len(slots) >= limit:
                return None
            token = uuid.uuid4().hex
            slots[token] = now
            return token

    def give_slot(self, group: str, token: str) -> None:
        with self._lock:
            self._slots[group].pop(token, None)

    def take_rate(self, group: str, per_s: int, count: int, now: float) -> bool:
        with self._lock:
            second, used = self._windows.get(group, (-1, 0))
            if second != int(now):
                second, used = int(now), 0
            if used and used + count > per_s:
                return False
            self._windows[group] = (second, used + count)
            return True


# the back-off in force is kept as it is; else the level goes up and a new back-off begins
# (KEYS: until, level; ARGV: now, base_s, max_s), all in one step for every worker
_THROTTLED = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
if current > now then return string.format('%.6f', current) end
local level = redis.call('INCR', KEYS[2]) - 1
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]) * 2)
local seconds = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ level)
redis.call('SET', KEYS[1], string.format('%.6f', now + seconds), 'EX', math.floor(seconds) + 1)
return string.format('%.6f', now + seconds)
"""

# the level is forgotten unless a back-off is in force (KEYS: until, level; ARGV: now)
_CLEARED = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""

_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class _Seen:
    """A process's last view of a group's back-off in Redis."""

    read_at: float  #: time.monotonic() just before the read
    until: float  #: epoch seconds
    has_level: bool  #: a throttle level may be set: the next unthrottled slice clears it


class RedisPaceStore:
    """The same state in Redis, under `<namespace>:pace:<group>:…`, for every worker; the back-off
    read at most every `read_every_s` per group (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        read_every_s: float = BACKOFF_READ_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prefix = f"{namespace}:pace"
        self._read_every_s = read_every_s
        self._monotonic = monotonic
        # one entry per group, replaced whole (never mutated), so threads need no lock: a race
        # at worst keeps an older view, which the next read replaces within read_every_s
        self._seen: dict[str, _Seen] = {}

    def _key(self, group: str, what: str) -> str:
        return f"{self._prefix}:{group}:{what}"

    def backoff_until(self, group: str) -> float:
        seen = self._seen.get(group)
        read_at = self._monotonic()
        if seen is None or read_at - seen.read_at >= self._read_every_s:
            until, level = self._client.mget(self._key(group, "until"), self._key(group, "level"))
            seen = _Seen(read_at, float(until) if until else 0.0, level is not None)
            self._seen[group] = seen
        return seen.until

    def throttled(self, group: str, now: float, base_s: int, max_s: int) -> float:
        read_at = self._monotonic()
        keys = (self._key(group, "until"), self._key(group, "level"))
        until = float(self._client.eval(_THROTTLED, 2, *keys, repr(now), base_s, max_s))
        self._seen[group] = _Seen(read_at, until, has_level=True)
        return until

    def cleared(self, group: str, now: float) -> None:
        seen = self._seen.get(group)
        if seen is not None and not seen.has_level:
            return  # no throttle met here nor seen in the last read: nothing to clear
        keys = (self._key(group, "until"), self._key(group, "level"))
        if int(self._client.eval(_CLEARED, 2, *keys, repr(now))) and seen is not None:
            self._seen[group] = _Seen(seen.read_at, seen.until, has_level=False)

    def take_slot(self, group: str, limit: int, now: float) -> str | None:
        # a sorted set of slot leases, checked and taken in one script (atomic in Redis):
        # leases older than SLOT_TTL_S are dropped, then a free place is taken or refused
        token = uuid.uuid4().hex
        taken = self._client.eval(
            _TAKE_SLOT,
            1,
            self._key(group, "slots"),
            now - SLOT_TTL_S,
            limit,
            now,
            token,
            int(SLOT_TTL_S) * 2,
        )
        return token if int(taken) else None

    def give_slot(self, group: str, token: str) -> None:
        self._client.zrem(self._key(group, "slots"), token)

    def take_rate(self, group: str, per_s: int, count: int, now: float) -> bool:
        window = f"{self._key(group, 'rate')}:{int(now)}"
        pipe = self._client.pipeline()
        pipe.incrby(window, count)
        pipe.expire(window, 3)
        used = int(pipe.execute()[0])
        if used - count == 0 or used <= per_s:
            return True
        self._client.decrby(window, count)
        return False


Send = Callable[[Sequence[OutgoingMessage]], list[DeliveryResult]]


class DomainPacer:
    """Sends a slice group by group, within each group's limits and back-off."""

    def __init__(
        self,
        pacing: Pacing,
        store: PaceStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.pacing = pacing
        self.store = store
        self._clock = clock
        self._sleep = sleep

    def send(self, messages: Sequence[OutgoingMessage], send: Send) -> list[DeliveryResult]:
        by_group: dict[str, list[OutgoingMessage]] = defaultdict(list)
        for message in messages:
            by_group[self.pacing.group_of(message.rcpt)].append(message)
        results: list[DeliveryResult] = []
        for group, group_messages in by_group.items():
            results.extend(self._send_group(group, group_messages, send))
        return results

    def _send_group(
        self, group: str, messages: list[OutgoingMessage], send: Send
    ) -> list[DeliveryResult]:
        until = self.store.backoff_until(group)
        if until > self._clock():
            return _deferred(messages, f"{group} is backing off until {_hhmmss(until)} UTC")
        limit = self.pacing.concurrency.get(group)
        token = None
        if limit:
            token = self._wait_for_slot(group, limit)
            if token is None:
                return _deferred(messages, f"{group}: no free sending slot in {SLOT_WAIT_S:.0f} s")
        try:
            self._wait_for_rate(group, len(messages))
            results = send(messages)
        finally:
            if token is not None:
                self.store.give_slot(group, token)
        throttles = [r for r in results if is_throttling(r)]
        if throttles:
            self.store.throttled(
                group, self._clock(), self.pacing.backoff_s, self.pacing.backoff_max_s
            )
        elif any(r.outcome is Outcome.SENT for r in results):
            self.store.cleared(group, self._clock())
        return results

    def _wait_for_slot(self, group: str, limit: int) -> str | None:
        deadline = self._clock() + SLOT_WAIT_S
        while True:
            token = self.store.take_slot(group, limit, self._clock())
            if token is not None or self._clock() >= deadline:
                return token
            self._sleep(0.05)

    def _wait_for_rate(self, group: str, count: int) -> None:
        per_s = self.pacing.rate_per_s.get(group)
        if not per_s:
            return
        while count > 0:
            take = min(count, per_s)
            while not self.store.take_rate(group, per_s, take, self._clock()):
                now = self._clock()
                self._sleep(max(0.0, 1.0 - (now % 1.0)) + 0.001)
            count -= take


def _hhmmss(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch_s))


def _deferred(messages: Sequence[OutgoingMessage], why: str) -> list[DeliveryResult]:
    """Not sent, not tried: deferred with no reply code (never counted as a bounce)."""
    return [
        DeliveryResult(m.send_id, Outcome.DEFERRED, ReplyKind.RATE, reply=f"not sent: {why}")
        for m in messages
    ]


def make_pacer(settings: Settings) -> DomainPacer:
    """The pacer for a worker process: shared through Redis when there is one (the broker's or
    MAILER_REDIS_URL), else per process."""
    pacing = parse_pacing(settings)
    store: PaceStore
    if settings.shared_redis_url:
        import redis

        client = redis.Redis.from_url(settings.shared_redis_url)
        store = RedisPaceStore(client, settings.broker_namespace)
    else:
        store = MemoryPaceStore()
    return DomainPacer(pacing, store)
