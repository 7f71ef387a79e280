"""`mailer check-config`: every setting, connection and key checked, each problem with its fix.

Checks, in order: the settings themselves; the database (reachable, schema current); the
broker (Redis PING or a RabbitMQ connection) and the shared Redis; each relay (connect, EHLO,
STARTTLS when configured or offered, AUTH when configured, QUIT: no mail is sent); the DKIM key
(readable, RSA ≥ 1024 bits, and compared with the selector's DNS record when DNS answers), with
the TXT record to publish; the alert destinations.
"""

from __future__ import annotations

import base64
import functools
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from mailer import db
from mailer.config import Settings
from mailer.messages.dkim import MIN_KEY_BITS
from mailer.transports.relays import Relay, parse_relays

#: A connection check gives up after this long.
TIMEOUT_S = 10.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: Text to act on even when all is well (the DKIM record to publish).
    publish: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v != "" or k in ("ok", "name")}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def check_all(
    settings: Settings, *, dns_txt: Callable[[bytes], bytes | None] | None = None
) -> Report:
    """Run every check against `settings` (already validated); never raises."""
    report = Report()
    for step in (_database, _broker, _shared_redis):
        report.checks.append(_safely(step, settings))
    if settings.smtp_url.startswith("capture://"):
        report.checks.append(Check("relay", True, "capture:// (the in-process capture server)"))
    else:
        for relay in parse_relays(settings.smtp_url):
            report.checks.append(_safely(functools.partial(_relay, relay=relay), settings))
    report.checks.extend(_dkim(settings, dns_txt))
    report.checks.extend(_alerts(settings))
    return report


def _safely(step: Callable[[Settings], Check], settings: Settings) -> Check:
    try:
        return step(settings)
    except Exception as exc:  # a check that crashed is a failed check, not a crash
        name = getattr(step, "__name__", "") or getattr(getattr(step, "func", None), "__name__", "")
        return Check(
            name.strip("_") or "check", False, f"{type(exc).__name__}: {exc}", "see the error above"
        )


def _database(settings: Settings) -> Check:
    shown = settings.describe()["database_url"]
    engine = db.make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = db.current_revision(engine), db.head_revision()
    except Exception as exc:
        return Check(
            "database",
            False,
            f"{shown}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            "check MAILER_DATABASE_URL (host, port, user, database name) and that the server "
            "is up and lets this host in",
        )
    finally:
        engine.dispose()
    if current != head:
        return Check(
            "database",
            False,
            f"{shown}: schema at {current or 'nothing'}, code at {head}",
            "run `mailer db upgrade`",
        )
    return Check("database", True, f"{shown}: reachable, schema {head}")


def _broker(settings: Settings) -> Check:
    shown = settings.describe()["broker_url"]
    if settings.is_embedded_broker:
        return Check("broker", True, "memory:// (worker threads inside the launching command)")
    if settings.is_rabbitmq:
        import pika

        try:
            params = pika.URLParameters(settings.broker_url)
            params.socket_timeout = TIMEOUT_S
            pika.BlockingConnection(params).close()
        except Exception as exc:
            return Check(
                "broker",
                False,
                f"{shown}: {type(exc).__name__}: {exc}",
                "check MAILER_BROKER_URL (user, password, vhost) and that RabbitMQ runs",
            )
        return Check("broker", True, f"{shown}: RabbitMQ answers")
    return _ping("broker", settings.broker_url, shown, "MAILER_BROKER_URL")


def _shared_redis(settings: Settings) -> Check:
    if settings.redis_url:
        return _ping(
            "redis", settings.redis_url, settings.describe()["redis_url"], "MAILER_REDIS_URL"
        )
    if settings.is_rabbitmq:
        return Check(
            "redis",
            True,
            "MAILER_REDIS_URL not set: rate limits and pacing are per "
            "process (set it to share them between workers)",
        )
    return Check(
        "redis",
        True,
        "limits shared through the broker's Redis"
        if settings.shared_redis_url
        else "in-process limits (embedded)",
    )


def _ping(name: str, url: str, shown: str, setting: str) -> Check:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S).ping()
    except Exception as exc:
        return Check(
            name,
            False,
            f"{shown}: {type(exc).__name__}: {exc}",
            f"check {setting} and that Redis runs and accepts this host",
        )
    return Check(name, True, f"{shown}: Redis answers PING")


def _relay(settings: Settings, relay: Relay) -> Check:
    name = f"relay {relay.address}"
    steps: list[str] = []
    try:
        smtp: smtplib.SMTP
        if relay.is_implicit_tls:
            smtp = smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=TIMEOUT_S, context=relay.tls_context()
            )
            steps.append("TLS")
        else:
            smtp = smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT_S)
        with smtp:
            smtp.ehlo(settings.smtp_local_hostname)
            steps.append("EHLO")
            offered = smtp.has_extn("starttls")
            if (
                not relay.is_implicit_tls
                and relay.starttls is not False
                and (relay.starttls or offered)
            ):
                if not offered:
                    return Check(
                        name,
                        False,
                        "STARTTLS required (starttls=1) but not offered",
                        "use the relay's submission port (587) or smtps://",
                    )
                smtp.starttls(context=relay.tls_context(is_opportunistic=relay.starttls is None))
                smtp.ehlo(settings.smtp_local_hostname)
                steps.append("STARTTLS")
            if relay.has_credentials:
                smtp.login(relay.username, relay.password)
                steps.append("AUTH")
            smtp.quit()
    except smtplib.SMTPAuthenticationError as exc:
        return Check(
            name,
            False,
            f"AUTH refused: {exc.smtp_code} {_text(exc.smtp_error)}",
            "check the user name and password in MAILER_SMTP_URL",
        )
    except ssl.SSLError as exc:
        return Check(
            name,
            False,
            f"TLS failed: {exc}",
            "the relay's certificate is not trusted: give its CA with cafile=… in "
            "MAILER_SMTP_URL, or fix the relay's certificate",
        )
    except (OSError, smtplib.SMTPException) as exc:
        return Check(
            name,
            False,
            f"{type(exc).__name__}: {exc}",
            "check the host and port in MAILER_SMTP_URL and that this host may connect",
        )
    return Check(name, True, " → ".join(steps) + " → QUIT (no mail sent)")


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else raw


def dkim_record(public_key: rsa.RSAPublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def _dkim(settings: Settings, dns_txt: Callable[[bytes], bytes | None] | None) -> list[Check]:
    if not settings.dkim_private_key_path:
        return [
            Check(
                "dkim",
                True,
                "no DKIM key configured (mail goes unsigned; set "
                "MAILER_DKIM_PRIVATE_KEY_PATH, _SELECTOR and _DOMAIN to sign)",
            )
        ]
    path = Path(settings.dkim_private_key_path)
    missing = [n for n in ("dkim_selector", "dkim_domain") if not getattr(settings, n)]
    if missing:
        return [
            Check(
                "dkim",
                False,
                f"{', '.join('MAILER_' + m.upper() for m in missing)} empty",
                "set the selector and the domain the key is published under",
            )
        ]
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        return [
            Check(
                "dkim",
                False,
                f"{path}: {exc.strerror}",
                "point MAILER_DKIM_PRIVATE_KEY_PATH at the PEM file, readable by mailer",
            )
        ]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return [
            Check(
                "dkim",
                False,
                f"{path}: not a PEM private key without password ({exc})",
                "create one: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048",
            )
        ]
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
        return [
            Check(
                "dkim",
                False,
                f"{path}: not an RSA key of at least {MIN_KEY_BITS} bits",
                "create a 2048-bit RSA key",
            )
        ]
    name = f"{settings.dkim_selector}._domainkey.{settings.dkim_domain}"
    expected = dkim_record(key.public_key())
    publish = f'{name}. IN TXT "{expected}"'
    lookup = dns_txt or _dns_txt
    try:
        found = lookup(f"{name}.".encode())
    except Exception:
        found = None
    if found is None:
        return [
            Check(
                "dkim",
                True,
                f"{key.key_size}-bit key; {name} not found in DNS (or DNS "
                "unreachable from here): publish the record below",
                publish=publish,
            )
        ]
    published = _tag(found.decode(errors="replace"), "p")
    if published != _tag(expected, "p"):
        return [
            Check(
                "dkim",
                False,
                f"{name} publishes another key than {path}",
                "publish the record below (or configure the key that matches DNS)",
                publish=publish,
            )
        ]
    return [Check("dkim", True, f"{key.key_size}-bit key matches {name}", publish=publish)]


def _tag(record: str, tag: str) -> str:
    for part in record.replace(" ", "").split(";"):
        key, _, value = part.partition("=")
        if key == tag:
            return value
    return ""


def _dns_txt(name: bytes) -> bytes | None:
    from dkim.dnsplug import get_txt

    return get_txt(name, timeout=3)


def _alerts(settings: Settings) -> list[Check]:
    if not (settings.alert_email or settings.alert_webhook_url):
        return [
            Check(
                "alerts",
                True,
                "no MAILER_ALERT_EMAIL or MAILER_ALERT_WEBHOOK_URL: alerts are only logged",
            )
        ]
    if settings.alert_email and settings.smtp_url.startswith("capture://"):
        return [
            Check(
                "alerts",
                False,
                "MAILER_ALERT_EMAIL is set but MAILER_SMTP_URL is capture://",
                "alerts are mailed through the relay: configure a real one",
            )
        ]
    if settings.alert_webhook_url and not settings.alert_webhook_url.startswith(
        ("https://", "http://")
    ):
        return [
            Check(
                "alerts",
                False,
                f"MAILER_ALERT_WEBHOOK_URL={settings.alert_webhook_url!r}",
                "use an http(s):// URL",
            )
        ]
    return [Check("alerts", True, "destinations configured")]
