"""`mailer check-config` against a real database, Redis and an SMTP server with STARTTLS and
AUTH; the DKIM record to publish; each problem reported with its fix and a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailer.checks import check_all, dkim_record
from mailer.cli import main
from mailer.config import Settings
from tests.conftest import TEST_SECRET
from tests.delivery_fixtures import REDIS_URL
from tests.smtp_fixtures import TlsFiles
from tests.smtpd import FaultServer


@pytest.fixture
def dkim_key(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key


@pytest.fixture
def tls_relay(make_smtp_server: Callable[..., FaultServer], tls_files: TlsFiles) -> FaultServer:
    return make_smtp_server(tls_context=tls_files.server_context(), logins={"mailer": "s3cret"})


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {
        "MAILER_DATABASE_URL": settings.database_url,
        "MAILER_SECRET_KEY": TEST_SECRET,
        "MAILER_VAR_DIR": str(settings.var_dir),
        "MAILER_BROKER_URL": REDIS_URL,
    }
    env.update({f"MAILER_{k.upper()}": v for k, v in extra.items()})
    return env


def test_a_good_setup_passes_every_check_and_prints_the_dkim_record(
    settings: Settings,
    tls_relay: FaultServer,
    tls_files: TlsFiles,
    dkim_key: tuple[Path, rsa.RSAPrivateKey],
) -> None:
    path, key = dkim_key
    env = _env(
        settings,
        smtp_url=f"smtp://mailer:s3cret@127.0.0.1:{tls_relay.port}?starttls=1"
        f"&cafile={tls_files.cert_path}",
        dkim_selector="s2026",
        dkim_domain="cpi.example",
        dkim_private_key_path=str(path),
    )
    result = CliRunner().invoke(main, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    assert "EHLO → STARTTLS → AUTH → QUIT (no mail sent)" in result.output
    assert (
        f's2026._domainkey.cpi.example. IN TXT "{dkim_record(key.public_key())}"' in result.output
    )
    assert "Redis answers PING" in result.output
    assert result.output.strip().endswith("all good")
    assert tls_relay.messages == []


def test_each_problem_is_named_with_its_fix_and_the_exit_is_non_zero(
    settings: Settings, tls_relay: FaultServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    env = _env(
        settings,
        database_url=f"sqlite:///{tmp_path / 'empty.db'}",
        broker_url="redis://127.0.0.1:1/0",
        smtp_url=f"smtp://mailer:wrong@127.0.0.1:{tls_relay.port}?starttls=1"
        f"&cafile={tls_files.cert_path}",
        dkim_selector="s2026",
        dkim_domain="cpi.example",
        dkim_private_key_path=str(tmp_path / "missing.pem"),
    )
    result = CliRunner().invoke(main, ["check-config", "--json"], env=env)
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["database"]["fix"] == "run `mailer db upgrade`"
    assert "MAILER_BROKER_URL" in checks["broker"]["fix"]
    relay = checks[f"relay 127.0.0.1:{tls_relay.port}"]
    assert relay["detail"].startswith("AUTH refused: 535")
    assert "password" in relay["fix"]
    assert "MAILER_DKIM_PRIVATE_KEY_PATH" in checks["dkim"]["fix"]


def test_a_bad_setting_is_reported_rather_than_crashing(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["check-config"], env=_env(settings, env="prod"))
    assert result.exit_code == 1
    assert "FAIL settings: MAILER_ENV='prod' is not known" in result.output


def test_the_dkim_key_is_compared_with_the_published_record(
    settings: Settings, dkim_key: tuple[Path, rsa.RSAPrivateKey]
) -> None:
    path, key = dkim_key
    configured = settings.with_(
        dkim_selector="s1", dkim_domain="cpi.example", dkim_private_key_path=str(path)
    )
    published = dkim_record(key.public_key()).encode()
    other = dkim_record(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ).encode()

    def dns(record: bytes) -> Callable[[bytes], bytes | None]:
        return lambda name: record if name == b"s1._domainkey.cpi.example." else None

    (match,) = [c for c in check_all(configured, dns_txt=dns(published)).checks if c.name == "dkim"]
    assert match.ok and "matches" in match.detail
    (wrong,) = [c for c in check_all(configured, dns_txt=dns(other)).checks if c.name == "dkim"]
    assert not wrong.ok and "publishes another key" in wrong.detail
