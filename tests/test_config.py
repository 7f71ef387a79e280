from __future__ import annotations

from pathlib import Path

import pytest

from mailer.config import DEMO_SECRET, Settings
from mailer.errors import ConfigError


def test_defaults_work_on_a_laptop() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.database_url == "sqlite:///var/mailer.db"
    assert settings.broker_url == "memory://"
    assert settings.smtp_url == "capture://"
    assert settings.secret_key.reveal() == DEMO_SECRET
    assert (settings.templates_dir / "layouts").is_dir()


def test_environment_overrides_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nMAILER_BATCH_SIZE=200\nexport MAILER_MAIL_DOMAIN='mail.cpi.example'\n"
        "MAILER_RETRY_DELAYS_S=60,120\n"
    )
    settings = Settings.from_env({"MAILER_BATCH_SIZE": "300"}, env_file=env_file)
    assert settings.batch_size == 300
    assert settings.mail_domain == "mail.cpi.example"
    assert settings.retry_delays_s == (60, 120)


def test_a_malformed_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="MAILER_BATCH_SIZE='many' is not valid"):
        Settings.from_env({"MAILER_BATCH_SIZE": "many"}, env_file=None)


def test_a_malformed_env_file_line_names_file_and_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MAILER_ENV=development\nnot a setting\n")
    with pytest.raises(ConfigError, match=r"\.env:2: expected NAME=value"):
        Settings.from_env({}, env_file=env_file)


def test_secrets_and_url_passwords_print_masked() -> None:
    settings = Settings.from_env(
        {
            "MAILER_SECRET_KEY": "s3cret-value",
            "MAILER_SMTP_URL": "smtp://relay-user:relay-pass@relay.example:587?starttls=1",
            "MAILER_DATABASE_URL": "postgresql://app:dbpass@127.0.0.1/mailer",
        },
        env_file=None,
    )
    shown = settings.describe()
    text = repr(settings) + str(shown)
    for secret in ("s3cret-value", "relay-pass", "dbpass"):
        assert secret not in text
    assert shown["smtp_url"] == "smtp://relay-user:****@relay.example:587?starttls=1"
    assert shown["secret_key"] == "**********"


#: What `python -c "import secrets; print(secrets.token_urlsafe(48))"` prints.
STRONG_KEY = "hV3q9_Zk2LrT0wXy8bNmA4sD6fGjK1pQ-eRuIoC7vB5nM2lZxYwE"
PRODUCTION = {"MAILER_ENV": "production", "MAILER_PUBLIC_BASE_URL": "https://mail.cpi.example"}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"MAILER_OLD_SECRET_KEYS": DEMO_SECRET}, "MAILER_OLD_SECRET_KEYS"),
        ({"MAILER_OLD_SECRET_KEYS": f"{STRONG_KEY[::-1]},short"}, "MAILER_OLD_SECRET_KEYS"),
        ({"MAILER_SECRET_KEY": "k"}, "MAILER_SECRET_KEY"),
        ({"MAILER_SECRET_KEY": "a" * 40}, "MAILER_SECRET_KEY"),
        ({"MAILER_ADDRESS_HASH_KEY": DEMO_SECRET}, "MAILER_ADDRESS_HASH_KEY"),
    ],
)
def test_production_refuses_weak_or_demo_keys_in_every_key_setting(
    extra: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**PRODUCTION, "MAILER_SECRET_KEY": STRONG_KEY, **extra}, env_file=None)
    message = str(info.value)
    assert named in message and "token_urlsafe" in message
    assert STRONG_KEY not in message and DEMO_SECRET not in message


@pytest.mark.parametrize("env", ["Production", "prod", "PRODUCTION", "staging", ""])
def test_an_unknown_mailer_env_is_refused_with_the_known_values(env: str) -> None:
    with pytest.raises(ConfigError, match=r"MAILER_ENV=.*development.*production"):
        Settings.from_env({"MAILER_ENV": env}, env_file=None)


def test_production_refuses_the_demo_secret_and_plain_http_links() -> None:
    with pytest.raises(ConfigError, match="demo secret"):
        Settings.from_env({"MAILER_ENV": "production"}, env_file=None)
    with pytest.raises(ConfigError, match="https://"):
        Settings.from_env(
            {"MAILER_ENV": "production", "MAILER_SECRET_KEY": STRONG_KEY}, env_file=None
        )
    Settings.from_env(
        {
            "MAILER_ENV": "production",
            "MAILER_SECRET_KEY": STRONG_KEY,
            "MAILER_PUBLIC_BASE_URL": "https://mail.cpi.example",
        },
        env_file=None,
    )


def test_an_empty_postal_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="CAN-SPAM"):
        Settings.from_env({"MAILER_POSTAL_ADDRESS": "  "}, env_file=None)


def test_an_unknown_mailer_variable_is_refused_with_the_nearest_name() -> None:
    with pytest.raises(
        ConfigError,
        match=r"MAILER_SMTP_ULR is not a mailer setting; did you mean MAILER_SMTP_URL\?",
    ):
        Settings.from_env({"MAILER_SMTP_ULR": "smtp://relay.example:25"}, env_file=None)


def test_an_unknown_name_with_nothing_close_is_refused_and_told_to_go() -> None:
    with pytest.raises(ConfigError, match="MAILER_FROBNICATE is not a mailer setting; remove it"):
        Settings.from_env({"MAILER_FROBNICATE": "1"}, env_file=None)


def test_other_programs_variables_and_the_test_suites_own_are_left_alone() -> None:
    Settings.from_env(
        {"PATH": "/usr/bin", "MAILER_TEST_PG_ADMIN_URL": "postgresql://x@y/z"}, env_file=None
    )


def test_an_unknown_key_in_the_env_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("MAILER_BATCH_SIZE=200\nMAILER_BROKER_ULR=redis://127.0.0.1:6379/0\n")
    with pytest.raises(
        ConfigError, match=r"\.env: MAILER_BROKER_ULR .*did you mean MAILER_BROKER_URL"
    ):
        Settings.from_env({}, env_file=env_file)
    env_file.write_text("SMTP_URL=smtp://relay.example\n")
    with pytest.raises(ConfigError, match="did you mean MAILER_SMTP_URL"):
        Settings.from_env({}, env_file=env_file)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "MAILER_SMTP_CLIENT",
            "aiosmtp",
            r"not one of auto, pipelining, aiosmtplib; did you mean 'aiosmtplib'",
        ),
        (
            "MAILER_BROKER_URL",
            "127.0.0.1:6379",
            r"use a memory://, redis://, rediss://, amqp://, amqps:// URL",
        ),
        ("MAILER_DATABASE_URL", "mysql://x@y/z", r"use a sqlite://, postgresql://"),
        ("MAILER_PUBLIC_BASE_URL", "mail.cpi.example", r"e\.g\. https://mail\.cpi\.example"),
        ("MAILER_SMTP_URL", "smtp://relay.example:abc", r"the port is not a number"),
        ("MAILER_SMTP_URL", "smtp://relay.example?starttls=maybe", r"use starttls=1 or starttls=0"),
        ("MAILER_SMTP_POOL_SIZE", "0", r"MAILER_SMTP_POOL_SIZE=0 must be at least 1"),
        ("MAILER_RATE_LIMIT_PER_S", "-5", r"cannot be negative"),
    ],
)
def test_every_choice_is_checked_at_start_with_the_fix(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({name: value}, env_file=None)


def test_every_broker_the_readme_names_is_accepted() -> None:
    for url in ("memory://", "redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672/%2F"):
        assert Settings.from_env({"MAILER_BROKER_URL": url}, env_file=None).broker_url == url


def test_every_choice_the_readme_names_is_accepted() -> None:
    for client in ("auto", "aiosmtplib"):
        assert (
            Settings.from_env({"MAILER_SMTP_CLIENT": client}, env_file=None).smtp_client == client
        )
    Settings.from_env(
        {
            "MAILER_BROKER_URL": "redis://127.0.0.1:6379/0",
            "MAILER_DATABASE_URL": "postgresql://mailer@127.0.0.1/mailer",
            "MAILER_SMTP_URL": "smtp://u:p@relay.example:587?starttls=1,smtps://relay2.example",
        },
        env_file=None,
    )


def test_the_policy_reach_is_every_client_held_unless_a_grace_period_is_set() -> None:
    assert Settings.from_env({}, env_file=None).policy_grace_days is None
    assert (
        Settings.from_env({"MAILER_POLICY_GRACE_DAYS": ""}, env_file=None).policy_grace_days is None
    )
    settings = Settings.from_env({"MAILER_POLICY_GRACE_DAYS": "90"}, env_file=None)
    assert settings.policy_grace_days == 90
    with pytest.raises(ConfigError, match="MAILER_POLICY_GRACE_DAYS=-1 cannot be negative"):
        Settings.from_env({"MAILER_POLICY_GRACE_DAYS": "-1"}, env_file=None)
