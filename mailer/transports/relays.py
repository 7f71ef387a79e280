"""Where mail goes: `MAILER_SMTP_URL` parsed into relays, each with its TLS and login settings.

    smtp://[user:pass@]host[:port][?starttls=1|0&timeout_s=30&verify=1|0&cafile=/path.pem]
    smtps://…              implicit TLS (port 465 by default)
    capture://             the in-process capture server (see capture.py)

Several URLs separated by commas spread the connections across relays. A URL with a user name
needs verified TLS (smtps:// or starttls=1, and not verify=0): the password never goes out in
clear nor to a server whose certificate was not checked.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from mailer.errors import ConfigError

_KNOWN_PARAMS = {"starttls", "timeout_s", "verify", "cafile"}


@dataclass(frozen=True)
class Relay:
    """One SMTP server to send through."""

    host: str
    port: int
    is_implicit_tls: bool = False
    #: True: STARTTLS or give up; False: never; None: use it when the server offers it.
    starttls: bool | None = None
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    timeout_s: float = 30.0
    #: Check the server's certificate. Opportunistic STARTTLS (starttls unset) never checks.
    is_verifying: bool = True
    cafile: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def has_credentials(self) -> bool:
        return bool(self.username)

    def tls_context(self, *, is_opportunistic: bool = False) -> ssl.SSLContext:
        """A client TLS context; unverified for opportunistic STARTTLS or `verify=0`."""
        return _client_context(self.cafile, self.is_verifying and not is_opportunistic)


# Loading the system's CA certificates costs ~10–20 ms: once per process, not per connection.
@functools.lru_cache(maxsize=16)
def _client_context(cafile: str, is_verifying: bool) -> ssl.SSLContext:
    if not is_verifying:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cafile or None)


def parse_relays(urls: str, *, default_timeout_s: float = 30.0) -> list[Relay]:
    """Every relay in a comma-separated list of smtp:// and smtps:// URLs."""
    relays = [
        parse_relay(url.strip(), default_timeout_s=default_timeout_s)
        for url in urls.split(",")
        if url.strip()
    ]
    if not relays:
        raise ConfigError("MAILER_SMTP_URL is empty; set it to smtp://host:port or capture://")
    return relays


def parse_relay(url: str, *, default_timeout_s: float = 30.0) -> Relay:
    """One relay from `smtp://user:pass@host:port?starttls=1`; errors name the bad part."""
    parts = urlsplit(url)
    shown = _masked(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(
            f"MAILER_SMTP_URL {shown!r}: unknown scheme {parts.scheme!r}; "
            "use smtp://host:port, smtps://host:port or capture://"
        )
    if not parts.hostname:
        raise ConfigError(f"MAILER_SMTP_URL {shown!r} has no host; use smtp://host:port")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
    except ValueError as exc:
        raise ConfigError(f"MAILER_SMTP_URL {shown!r}: the port is not a number") from exc
    params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(params) - _KNOWN_PARAMS
    if unknown:
        raise ConfigError(
            f"MAILER_SMTP_URL {shown!r}: unknown parameter {sorted(unknown)[0]!r}; "
            f"known: {', '.join(sorted(_KNOWN_PARAMS))}"
        )
    starttls = _flag(shown, params, "starttls")
    if parts.scheme == "smtps" and starttls:
        raise ConfigError(
            f"MAILER_SMTP_URL {shown!r}: smtps:// is already TLS; drop starttls=1 "
            "or use smtp:// with starttls=1"
        )
    verify = _flag(shown, params, "verify")
    if parts.username and not (parts.scheme == "smtps" or starttls):
        raise ConfigError(
            f"MAILER_SMTP_URL {shown!r}: the password would be sent without TLS whenever the "
            "server (or anyone in between) offers no STARTTLS; add starttls=1 "
            "(smtp://user:pass@host:587?starttls=1) or use smtps://"
        )
    if parts.username and verify is False:
        raise ConfigError(
            f"MAILER_SMTP_URL {shown!r}: verify=0 would send the password over TLS to any "
            "server that answers, unverified; drop verify=0, and add cafile=/path/to/ca.pem if "
            "your relay's certificate comes from your own CA"
        )
    try:
        timeout_s = float(params.get("timeout_s", default_timeout_s))
    except ValueError as exc:
        raise ConfigError(f"MAILER_SMTP_URL {shown!r}: timeout_s must be a number") from exc
    return Relay(
        host=parts.hostname,
        port=port,
        is_implicit_tls=parts.scheme == "smtps",
        starttls=starttls,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        timeout_s=timeout_s,
        is_verifying=verify is not False,
        cafile=params.get("cafile", ""),
    )


def rate_limit_name(urls: str) -> str:
    """The relays of `urls` as `host:port,…`: what a shared rate limit is keyed by in Redis,
    where a key name must never carry the password of the URL."""
    if urls.strip().startswith("capture://"):
        return "capture"
    return ",".join(relay.address for relay in parse_relays(urls))


def _flag(shown: str, params: dict[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"MAILER_SMTP_URL {shown!r}: {name}={raw!r}; use {name}=1 or {name}=0")


def _masked(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.partition(':')[0]}:****@{host}"
