"""Security headers, body limits, per-visitor rate limits and URLs holding a NUL (pure ASGI
middleware), and the checks every web front end shares: who the visitor is, whether a form
came from our page, and whether a text can be stored at all (`unstorable_text`).

The middleware here is generic: the public pages use it, and so can any other app of mailer.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_log = logging.getLogger(__name__)

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
    come from the client and can be forged, so they are ignored. Without a trusted proxy the
    header is never used, not even through the server: uvicorn's proxy_headers (on by default
    for peers on 127.0.0.1) puts a forwarded address in place of the peer, with port 0, and
    then the visitor is unknown ("").
    """
    client = scope.get("client")
    if not trusted_proxy and client and client[1] == 0 and _has_forwarded_for(scope):
        _warn_server_applies_forwarded_for()
        return ""
    if trusted_proxy:
        forwarded = Headers(scope=scope).get("x-forwarded-for", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass  # no header, or not an address: the peer is all we know
    client = scope.get("client")
    return str(client[0]) if client else ""


def _has_forwarded_for(scope: Scope) -> bool:
    return any(name == b"x-forwarded-for" for name, _ in scope.get("headers", ()))


@functools.cache
def _warn_server_applies_forwarded_for() -> None:
    _log.warning(
        "the server replaced the visitor's address with X-Forwarded-For (uvicorn's "
        "proxy_headers); mailer ignores it without MAILER_TRUSTED_PROXY=true. Serve with "
        "`mailer serve`, or `uvicorn --no-proxy-headers …`"
    )


def rate_limit_key(ip: str) -> str:
    """Who a rate limit counts: an IPv4 address, or the /64 of an IPv6 one (a single
    subscriber gets a whole /64 and could otherwise take a new address per request)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


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
                    headers.setdefault(name, value)  # the admin app sets a CSP of its own
                if is_no_store or message["status"] >= 500:
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
        self,
        app: ASGIApp,
        *,
        limiter: SlidingWindowLimiter,
        trusted_proxy: bool = False,
        prefixes: tuple[str, ...] = LIMITED_PREFIXES,
        name: str = "pages",
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.trusted_proxy = trusted_proxy
        self.prefixes = prefixes
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        visitor = rate_limit_key(client_ip(scope, trusted_proxy=self.trusted_proxy))
        wait_s = self.limiter.hit(f"{self.name}:{visitor}")
        if wait_s <= 0:
            await self.app(scope, receive, send)
            return
        response = PlainTextResponse(
            "Too many requests. Please wait a minute and try again.\n",
            status_code=429,
            headers={"retry-after": str(max(1, math.ceil(wait_s)))},
        )
        await response(scope, receive, send)


#: What no text mailer stores or looks up can hold: PostgreSQL refuses NUL in any text, and a
#: lone surrogate (JSON's "\ud800") is no character at all, so UTF-8 cannot encode it.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def unstorable_text(value: str) -> str:
    """Why `value` cannot be stored or looked up as text, with the fix; "" when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return ""
    if found.group() == "\x00":
        return "holds a NUL character (U+0000), which no text here may contain: remove it"
    code = f"U+{ord(found.group()):04X}"
    return f"holds a lone surrogate ({code}), which is not a character: send the text as UTF-8"


def _plain_refusal(status: int, field: str, message: str) -> Response:
    return PlainTextResponse(f"Refused: the {field} {message}.\n", status_code=status)


class UrlTextMiddleware:
    """Refuses a path or query parameter holding a NUL (`%00`) before a handler looks it up:
    a path is not found (404), a query parameter is invalid (422), named with the fix.
    `refuse(status, field, message)` makes the answer (the API's is problem+json)."""

    def __init__(
        self, app: ASGIApp, *, refuse: Callable[[int, str, str], Response] = _plain_refusal
    ) -> None:
        self.app = app
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = _nul_in_url(scope) if scope["type"] == "http" else None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        response = self.refuse(*refusal)
        await response(scope, receive, send)


def _nul_in_url(scope: Scope) -> tuple[int, str, str] | None:
    if "\x00" in str(scope.get("path", "")):
        return 404, "path", "holds a NUL character (%00), which no name here contains: remove it"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query:
        # parsed as Starlette parses it, so the name is the one a handler reads
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name + value:
                return 422, f"query parameter {name!r}", unstorable_text(name + value)
    return None


class _BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413)


class BodyLimitMiddleware:
    """Answers 413 once a request body passes `max_bytes`, counted as it arrives (a chunked
    upload has no Content-Length to trust), so nothing larger is ever read or spooled."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, skip_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Paths with a limit of their own (the admin app and the API take CSV uploads).
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.skip_prefixes):
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await _too_large(scope, receive, send)
            return
        received = 0
        is_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()  # the app's error handler renders it, if it has one
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal is_started
            is_started = is_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if is_started:
                raise
            await _too_large(scope, receive, send)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = PlainTextResponse("That request is too large.\n", status_code=413)
    await response(scope, receive, send)


class TokenRedactingFilter(logging.Filter):
    """Removes recipient tokens from log records: a token in a log line would let whoever
    reads the log unsubscribe that person. Installed on uvicorn's access log by the app
    itself, however it is served."""

    _TOKEN_PATH = re.compile(r"/(u|preferences)/[^/?#\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN_PATH.sub(r"/\1/[token]", a) if isinstance(a, str) else a
                for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = self._TOKEN_PATH.sub(r"/\1/[token]", record.msg)
        return True


def redact_tokens_in_server_logs() -> None:
    """Install TokenRedactingFilter on uvicorn's loggers, once."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in logger.filters):
            logger.addFilter(TokenRedactingFilter())
