"""Security headers and a per-IP rate limit for the public pages (pure ASGI middleware)."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The pages use one same-origin stylesheet and same-origin forms; nothing else may load.
#: frame-ancestors stops clickjacking of the confirm button; base-uri stops <base> tricks.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    # Token URLs must not leak to other sites through the Referer header.
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}

#: Paths whose responses carry a recipient token or consent state: never cache them.
NO_STORE_PREFIXES = ("/u/", "/preferences/")
#: Paths the rate limit covers: everything that reaches the database for a visitor.
LIMITED_PREFIXES = ("/u/", "/preferences/", "/privacy")


def origin_of(url: str) -> str:
    """`https://u.cpi.example` of `https://u.cpi.example/x`: scheme and host[:port], lowercase."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def is_cross_site(scope: Scope, *, allowed_origins: Collection[str]) -> bool:
    """Whether a browser sent this request from another site's page (a forged form post).

    `Sec-Fetch-Site` decides when the browser sent it; otherwise `Origin`, which must be one of
    `allowed_origins` or the request's own host. A request with neither (curl, a mail
    provider's server) comes from no browser page and is not cross-site.
    """
    headers = Headers(scope=scope)
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site:
        # set by the browser itself; Origin is then "null" anyway under no-referrer
        return fetch_site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    origin = origin.strip().lower()
    if origin in allowed_origins:
        return False
    host = headers.get("host", "").lower()
    return not host or urlsplit(origin).netloc != host


def client_ip(scope: Scope, *, trusted_proxy: bool) -> str:
    """The visitor's IP: the socket peer, or behind a trusted proxy the address it saw.

    The rightmost X-Forwarded-For entry is the one our proxy appended; entries left of it
    come from the client and can be forged, so they are ignored.
    """
    if trusted_proxy:
        forwarded = Headers(scope=scope).get("x-forwarded-for", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass  # no header, or not an address: the peer is all we know
    client = scope.get("client")
    return str(client[0]) if client else ""


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response, and no-store to token pages."""

    def __init__(self, app: ASGIApp, *, is_https: bool = False) -> None:
        self.app = app
        self.headers = dict(SECURITY_HEADERS)
        if is_https:
            self.headers["strict-transport-security"] = "max-age=31536000"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_no_store = str(scope.get("path", "")).startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
                if is_no_store:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_s` seconds; in-process and thread-safe.

    Each key keeps the times of its recent hits, so memory is bounded by keys × limit; keys
    with no recent hit are swept once the table grows past `max_keys`.
    """

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count one hit; return 0 if allowed, else the seconds until the next one would be."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        cutoff = now - self.window_s
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= cutoff:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window_s - now
            hits.append(now)
            if len(self._hits) > self.max_keys:
                self._sweep(cutoff)
        return 0.0

    def _sweep(self, cutoff: float) -> None:
        stale = [key for key, hits in self._hits.items() if not hits or hits[-1] <= cutoff]
        for key in stale:
            del self._hits[key]


class RateLimitMiddleware:
    """Answers 429 with Retry-After when one IP calls the public pages too often."""

    def __init__(
        self, app: ASGIApp, *, limiter: SlidingWindowLimiter, trusted_proxy: bool = False
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.trusted_proxy = trusted_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        wait_s = self.limiter.hit(client_ip(scope, trusted_proxy=self.trusted_proxy))
        if wait_s <= 0:
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "Too many requests. Please wait a minute and try again.\n",
            status_code=429,
            headers={"retry-after": str(max(1, math.ceil(wait_s)))},
        )
        await response(scope, receive, send)
