"""Settings: one object built from `MAILER_*` environment variables and a `.env` file.

Nothing else in mailer reads `os.environ`. Every setting has a default that works on a laptop;
production (`MAILER_ENV=production`, the only other value) refuses to start with the demo
secret or a short key in any key setting.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailer.errors import ConfigError

#: The secret shipped for laptops and tests; production refuses it.
DEMO_SECRET = "demo-secret-not-for-production"

#: The checkout mailer runs from, where templates/ and audiences/ live by default.
_PROJECT_DIR = Path(__file__).resolve().parent.parent

#: CPI's postal address, as printed in privacy-policy.txt.
DEFAULT_POSTAL_ADDRESS = "Communication Partners, Inc., 132 Crowell Way, Suite 100, Bend, OR 97702"


#: The values MAILER_ENV may take.
ENVIRONMENTS = ("development", "production")
#: Production keys are at least this long (and not one character repeated).
MIN_KEY_BYTES = 32


def _key_problem(key: str) -> str:
    """Why `key` is too weak to sign with in production; "" when it is fine."""
    if key == DEMO_SECRET:
        return "is the demo secret shipped with mailer"
    if len(key.encode()) < MIN_KEY_BYTES:
        return f"is {len(key.encode())} bytes long"
    if len(set(key)) < 8:
        return "has fewer than 8 different characters"
    return ""


class Secret:
    """A string that never prints itself."""

    def __init__(self, value: str) -> None:
        self._value = value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def reveal(self) -> str:
        return self._value


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _mask_url(url: str) -> str:
    """Hide the password in scheme://user:password@host URLs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, has_pw, _ = creds.partition(":")
    return f"{scheme}://{user}:****@{host}" if has_pw else url


@dataclass(frozen=True)
class Settings:
    """Every knob of mailer. Build it with `Settings.from_env()`."""

    env: str = "development"
    #: Where the embedded default keeps its SQLite file, Maildir and logs.
    var_dir: Path = Path("var")
    database_url: str = ""
    #: `memory://` runs the broker and workers in-process; `redis://…` uses Dramatiq's RedisBroker.
    broker_url: str = "memory://"
    #: Namespace for broker queues and shared rate limits in Redis (and, on RabbitMQ, the
    #: prefix of the queue names: `<namespace>.priority`, `<namespace>.bulk`).
    broker_namespace: str = "mailer"
    #: Redis for limits shared by every worker (rates, pacing, sign-in throttling) when the
    #: broker is RabbitMQ; with a Redis broker that one is used. Empty: limits per process.
    redis_url: str = ""
    #: `capture://` starts an in-process SMTP server that writes a Maildir under var/;
    #: `smtp://user:pass@host:port?starttls=1` or `smtps://…` for a real relay;
    #: several URLs, comma-separated, spread the load.
    smtp_url: str = "capture://"
    #: How the SMTP client talks: `auto` pipelines (RFC 2920) when the server offers it.
    smtp_client: str = "auto"
    smtp_timeout_s: float = 30.0
    smtp_pool_size: int = 8
    smtp_max_messages_per_connection: int = 100
    smtp_local_hostname: str = "mailer.localdomain"
    #: Messages per second across all workers for one relay; 0 means no limit.
    rate_limit_per_s: int = 0
    secret_key: Secret = field(default_factory=lambda: Secret(DEMO_SECRET))
    #: Older secret keys still accepted for tokens, newest first (key rotation).
    old_secret_keys: tuple[Secret, ...] = ()
    #: The key address hashes are made with, if not one of the keys above (see mailer.keys).
    address_hash_key: Secret = field(default_factory=lambda: Secret(""))
    #: Where recipients reach mailer's own pages (/u, /preferences, /privacy): `mailer serve`.
    public_base_url: str = "http://127.0.0.1:8000"
    #: CPI's own website, `{{ company.website }}` in templates (product pages, not mailer's).
    company_website: str = "https://www.cpi.example"
    mail_domain: str = "cpi.example"
    postal_address: str = DEFAULT_POSTAL_ADDRESS
    company_name: str = "Communication Partners, Inc."
    marketing_from: str = "CPI Benefits <news@cpi.example>"
    company_from: str = "Communication Partners, Inc. <privacy@cpi.example>"
    envelope_sender: str = "bounces@cpi.example"
    #: Who may send us complaints (ARF): addresses or domains (a domain covers its subdomains)
    #: of the feedback loops we signed up for, matched on the report's From. Empty: none.
    feedback_loop_senders: tuple[str, ...] = ()
    unsubscribe_mailto: str = "unsub@cpi.example"
    feedback_sender_id: str = "cpimail01"
    dkim_selector: str = ""
    dkim_domain: str = ""
    dkim_private_key_path: str = ""
    #: The time one message's templates may take to render; past it the send fails.
    template_render_budget_s: float = 2.0
    #: Default: ./templates, else the one beside the mailer package (a source checkout).
    templates_dir: Path = Path("templates")
    audiences_dir: Path = Path("audiences")
    #: Sends per broker message.
    batch_size: int = 500
    #: How long a worker owns claimed sends before the sweep takes them back.
    lease_s: int = 300
    #: Sends claimed, sent and recorded together (a slice): results are written after at most
    #: this many messages. Larger slices spread each slice's round trips and commits over more
    #: messages (docs/performance.md §10); a crash leaves uncertain only the messages on the
    #: wire, whatever the slice.
    record_every: int = 200
    #: Where worker threads journal each claim and SMTP acceptance the moment it happens, so the
    #: sweep can settle a dead worker's sends exactly; default <var_dir>/journal. Workers and
    #: the scheduler must share it (same host, or a shared directory).
    journal_dir: Path = Path("")
    #: Delays before each retry of a deferred send; the last one repeats.
    retry_delays_s: tuple[int, ...] = (300, 900, 1800, 3600, 7200, 14400)
    #: A deferred send fails for good this long after its first attempt (RFC 5321: 4–5 days).
    give_up_after_s: int = 4 * 24 * 3600
    #: A campaign pauses itself after this many 5.7.x (sender-side) failures.
    max_policy_failures: int = 50
    #: A scheduled campaign that could not start this long after its time waits to be relaunched.
    missed_window_s: int = 3600
    scheduler_interval_s: float = 5.0
    #: The zone launch times are read in when they carry none, and shown in (IANA Area/City).
    timezone: str = "America/Los_Angeles"
    #: Unset (the default): a material policy notice reaches every client organization whose
    #: information is still held, active or former, until retention purges it. A number of days
    #: narrows it to clients whose agreement is active or ended less than that many days ago.
    policy_grace_days: int | None = None
    retention_years: int = 7
    #: The acting user for CLI commands; the OS user name when empty.
    user: str = ""
    web_rate_limit_per_minute: int = 60
    #: A signed-in browser session ends after this long without a request…
    session_idle_timeout_s: int = 30 * 60
    #: …and this long after sign-in, however active.
    session_absolute_timeout_s: int = 12 * 3600
    #: Failed sign-ins per (IP, username) within the window before further tries are refused.
    login_max_failures: int = 5
    login_failure_window_s: int = 300
    #: API tokens expire after this many days unless created with another lifetime.
    api_token_days: int = 90
    #: The web app runs behind a proxy we control: take the visitor's IP from the rightmost
    #: X-Forwarded-For entry (recorded as proof of opt-out) instead of the socket peer.
    trusted_proxy: bool = False
    #: A web client must send a request's line and headers within this many seconds.
    web_header_timeout_s: float = 10.0

    # -- deliverability and operations (mailer.operations) --
    #: Soft bounces of one address, over at least `soft_bounce_min_days` with no delivery in
    #: between, that stop its marketing mail.
    soft_bounce_limit: int = 3
    soft_bounce_min_days: int = 7
    #: A campaign pauses itself when complaints exceed this share of its delivered mail…
    complaint_rate_limit: float = 0.003
    #: …once at least this many were delivered.
    complaint_rate_min_delivered: int = 1000
    #: A campaign pauses itself when hard bounces exceed this share of its attempts…
    hard_bounce_rate_limit: float = 0.05
    #: …once at least this many were attempted.
    hard_bounce_rate_min_attempts: int = 1000
    #: Operator alerts go by mail to this address and/or as a JSON POST to this URL.
    alert_email: str = ""
    alert_webhook_url: str = ""
    #: 5.7.x (sender-side) rejections in one campaign that raise an alert (a burst).
    alert_policy_failures: int = 10
    #: No scheduler sweep for this long raises an alert.
    alert_scheduler_silence_s: int = 300
    #: Provider event webhooks (/webhooks/{provider}): events older than this are refused.
    webhook_max_age_s: int = 3600
    #: Amazon SNS signing certificates are fetched only from URLs matching this pattern.
    ses_cert_url_pattern: str = (
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[0-9a-f]+\.pem$"
    )
    #: The SNS topics whose notifications are taken (empty: any topic).
    ses_topic_arns: tuple[str, ...] = ()
    #: SendGrid's Event Webhook verification key (base64 DER public key, from SendGrid).
    sendgrid_webhook_public_key: str = ""
    #: Postmark: the basic-auth "user:password" in the webhook URL and the secret header value.
    postmark_webhook_auth: Secret = field(default_factory=lambda: Secret(""))
    postmark_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    #: Mailgun's HTTP webhook signing key.
    mailgun_signing_key: Secret = field(default_factory=lambda: Secret(""))
    #: Recipient domain groups paced apart: "group=domain,domain;group=…"; every other
    #: domain is in the group `others`.
    domain_groups: str = (
        "gmail=gmail.com,googlemail.com;"
        "microsoft=outlook.com,hotmail.com,live.com,msn.com;"
        "yahoo=yahoo.com,ymail.com,aol.com"
    )
    #: Per group, SMTP sends in flight at once across all workers: "gmail=4;others=16" (none: no
    #: limit)…
    domain_concurrency: str = ""
    #: …and messages per second across all workers: "gmail=50;yahoo=20".
    domain_rate_per_s: str = ""
    #: A throttling reply (421 4.7.28, 4.7.0 … rate, 452 4.5.3) stops a group's mail this long,
    #: doubling with each further one up to the maximum.
    domain_backoff_s: int = 60
    domain_backoff_max_s: int = 3600
    #: `/metrics` answers loopback clients, or anyone with this bearer token.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    #: Local time (MAILER_TIMEZONE) at which the scheduler runs retention each day; empty: never.
    retention_at: str = "03:30"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Read `MAILER_*` from `environ` (default os.environ), after values from `env_file`."""
        values: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            from_file = _read_env_file(Path(env_file))
            _refuse_unknown_names(from_file, where=f"{env_file}: ", prefixed_only=False)
            values.update(from_file)
        source = os.environ if environ is None else environ
        from_environ = {
            k: v
            for k, v in source.items()
            if k.startswith("MAILER_") and not k.startswith(_TEST_SUITE_PREFIX)
        }
        _refuse_unknown_names(from_environ, where="", prefixed_only=True)
        values.update(from_environ)
        kwargs: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        for key, raw in values.items():
            name = key.removeprefix("MAILER_").lower()
            kwargs[name] = _convert(name, known[name].type, raw)
        settings = cls(**kwargs)
        settings.validate()
        check_choices(settings)
        return settings

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.var_dir / 'mailer.db'}")
        if self.journal_dir == Path(""):
            object.__setattr__(self, "journal_dir", self.var_dir / "journal")
        for name in ("templates_dir", "audiences_dir"):
            path: Path = getattr(self, name)
            beside_package = _PROJECT_DIR / path
            if not path.is_absolute() and not path.exists() and beside_package.is_dir():
                object.__setattr__(self, name, beside_package)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def is_embedded_broker(self) -> bool:
        """`memory://`: broker and worker threads live inside the command that launches."""
        return self.broker_url.startswith("memory://")

    @property
    def is_rabbitmq(self) -> bool:
        return self.broker_url.startswith(("amqp://", "amqps://"))

    @property
    def shared_redis_url(self) -> str:
        """The Redis that shared limits live in: the broker's, else MAILER_REDIS_URL, else ""."""
        if self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker_url
        return self.redis_url

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def validate(self) -> None:
        if self.env not in ENVIRONMENTS:
            raise ConfigError(
                f"MAILER_ENV={self.env!r} is not known; use one of {', '.join(ENVIRONMENTS)} "
                "(exactly so: anything else would quietly skip production's checks)"
            )
        if self.is_production:
            self._check_keys()
        if self.is_production and not self.public_base_url.startswith("https://"):
            raise ConfigError(
                f"MAILER_PUBLIC_BASE_URL={self.public_base_url!r}: production needs an https:// "
                "URL (RFC 8058 one-click unsubscribe requires HTTPS)"
            )
        if not self.postal_address.strip():
            raise ConfigError(
                "MAILER_POSTAL_ADDRESS is empty; commercial mail must carry a postal address "
                "(CAN-SPAM)"
            )
        if not self.smtp_url.startswith("capture://"):
            # late import: transports import this module; refuse a bad relay at start-up
            from mailer.transports.relays import parse_relays

            parse_relays(self.smtp_url)
        if self.batch_size < 1:
            raise ConfigError("MAILER_BATCH_SIZE must be at least 1")
        if not self.retry_delays_s:
            raise ConfigError("MAILER_RETRY_DELAYS_S needs at least one delay")
        self._check_operations()
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"MAILER_TIMEZONE={self.timezone!r} is not a time zone; use an Area/City name "
                "like America/Los_Angeles (the system's tz database, or the tzdata package)"
            ) from exc

    def _check_operations(self) -> None:
        for name in ("complaint_rate_limit", "hard_bounce_rate_limit"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(
                    f"MAILER_{name.upper()}={getattr(self, name)} must be a share between 0 and "
                    "1 (0.003 is 0.3%)"
                )
        from mailer.pacing import parse_pacing  # late import: pacing reads these settings

        parse_pacing(self)
        if self.retention_at:
            hour, sep, minute = self.retention_at.partition(":")
            if not (
                sep and hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60
            ):
                raise ConfigError(
                    f"MAILER_RETENTION_AT={self.retention_at!r} is not a time of day; use HH:MM "
                    "(24-hour, in MAILER_TIMEZONE), or empty to run retention only by hand"
                )

    def _check_keys(self) -> None:
        """Production: every key that signs or verifies is long, random and not the demo's."""
        named = [("MAILER_SECRET_KEY", self.secret_key)]
        named += [("MAILER_OLD_SECRET_KEYS", k) for k in self.old_secret_keys]
        if self.address_hash_key:
            named.append(("MAILER_ADDRESS_HASH_KEY", self.address_hash_key))
        for name, key in named:
            problem = _key_problem(key.reveal())
            if problem:
                raise ConfigError(
                    f"{name}: a key {problem}; production refuses to start with it (anyone "
                    "who can guess a key can forge opt-out links). Use at least "
                    f"{MIN_KEY_BYTES} random bytes, e.g. the output of "
                    '`python -c "import secrets; print(secrets.token_urlsafe(48))"`'
                )

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"Settings({shown})"

    def describe(self) -> dict[str, str]:
        """Every setting as text, secrets and URL passwords masked."""
        shown: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            elif f.name.endswith("_url"):
                text = ",".join(_mask_url(u) for u in str(value).split(","))
            else:
                text = str(value)
            shown[f.name] = text
        return shown


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.removeprefix("export ").partition("=")
        if not sep:
            raise ConfigError(f"{path}:{number}: expected NAME=value, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind == "Secret":
            return Secret(raw)
        if kind == "tuple[Secret, ...]":
            return tuple(Secret(v) for v in _parse_list(raw))
        if kind == "tuple[str, ...]":
            return tuple(v.lower() for v in _parse_list(raw))
        if kind == "tuple[int, ...]":
            return tuple(int(v) for v in _parse_list(raw))
        if kind == "int":
            return int(raw)
        if kind == "int | None":
            return int(raw) if raw.strip() else None
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return _parse_bool(raw)
        if kind == "Path":
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"MAILER_{name.upper()}={raw!r} is not valid: {exc}") from exc


# --- Names and choices, checked at start -------------------------------------------------------

#: Variables with this prefix belong to the test suite, not to mailer.
_TEST_SUITE_PREFIX = "MAILER_TEST_"

#: What MAILER_SMTP_CLIENT may be: `auto` pipelines (RFC 2920) when offered; `pipelining` is
#: the same client by its own name; `aiosmtplib` forces aiosmtplib.
SMTP_CLIENTS = ("auto", "pipelining", "aiosmtplib")
#: URL schemes MAILER_BROKER_URL may use.
BROKER_SCHEMES = ("memory", "redis", "rediss", "amqp", "amqps")
#: URL schemes MAILER_DATABASE_URL may use (psycopg 3 for PostgreSQL).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def setting_names() -> list[str]:
    """Every variable mailer reads, e.g. MAILER_SMTP_URL."""
    return [f"MAILER_{f.name.upper()}" for f in fields(Settings)]


def _refuse_unknown_names(values: Mapping[str, str], *, where: str, prefixed_only: bool) -> None:
    """A misspelt setting is an error, not a silent default: name it and the nearest real one."""
    known = setting_names()
    for key in values:
        if key in known or key.startswith(_TEST_SUITE_PREFIX):
            continue
        if prefixed_only and not key.startswith("MAILER_"):
            continue
        # compare without the shared prefix, which would make every name look alike
        bare = key.upper().removeprefix("MAILER_")
        choices = [name.removeprefix("MAILER_") for name in known]
        close = difflib.get_close_matches(bare, choices, n=1, cutoff=0.6)
        hint = f"did you mean MAILER_{close[0]}?" if close else "remove it"
        listing = "every setting is listed in mailer/config.py and the README"
        raise ConfigError(f"{where}{key} is not a mailer setting; {hint} ({listing})")


def _one_of(variable: str, value: str, choices: tuple[str, ...]) -> None:
    if value in choices:
        return
    close = difflib.get_close_matches(value.strip().lower(), choices, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{variable}={value!r} is not one of {', '.join(choices)}; {hint}".rstrip())


def _scheme_of(variable: str, url: str, schemes: tuple[str, ...], example: str) -> None:
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() in schemes:
        return
    shown = ", ".join(f"{s}://" for s in schemes)
    raise ConfigError(f"{variable}={_mask_url(url)!r}: use a {shown} URL, e.g. {example}")


def check_choices(settings: Settings) -> None:
    """Every setting with a fixed set of values or a shape, checked before anything starts.

    A wrong value would otherwise surface only at the first send, connection or page view.
    """
    _one_of("MAILER_SMTP_CLIENT", settings.smtp_client, SMTP_CLIENTS)
    _scheme_of("MAILER_BROKER_URL", settings.broker_url, BROKER_SCHEMES, "redis://127.0.0.1:6379/0")
    _scheme_of(
        "MAILER_DATABASE_URL",
        settings.database_url,
        DATABASE_SCHEMES,
        "postgresql://mailer@127.0.0.1/mailer",
    )
    _scheme_of(
        "MAILER_PUBLIC_BASE_URL",
        settings.public_base_url,
        ("http", "https"),
        "https://mail.cpi.example",
    )
    _scheme_of(
        "MAILER_COMPANY_WEBSITE",
        settings.company_website,
        ("http", "https"),
        "https://www.cpi.example",
    )
    for name in (
        "smtp_pool_size",
        "smtp_max_messages_per_connection",
        "record_every",
        "lease_s",
        "give_up_after_s",
        "max_policy_failures",
    ):
        if getattr(settings, name) < 1:
            raise ConfigError(f"MAILER_{name.upper()}={getattr(settings, name)} must be at least 1")
    for name in ("rate_limit_per_s", "missed_window_s", "policy_grace_days"):
        if (getattr(settings, name) or 0) < 0:
            raise ConfigError(
                f"MAILER_{name.upper()}={getattr(settings, name)} cannot be negative (0 is allowed)"
            )
    if settings.smtp_timeout_s <= 0 or settings.scheduler_interval_s <= 0:
        raise ConfigError("MAILER_SMTP_TIMEOUT_S and MAILER_SCHEDULER_INTERVAL_S must be above 0")
