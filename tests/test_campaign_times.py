"""Launch times: typed with an offset, a zone or neither (MAILER_TIMEZONE), refused when past,
and shown back in the zone."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.campaigns.times import format_delay, format_time, parse_time
from mailer.cli import main
from mailer.config import Settings
from mailer.errors import CampaignError, ConfigError
from mailer.models import utcnow
from tests.conftest import ROOT, TEST_SECRET

LA = "America/Los_Angeles"


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-01T09:00", "2026-12-01T17:00"),  # the default zone, PST in winter
        ("2026-07-01 09:00", "2026-07-01T16:00"),  # PDT in summer
        ("2026-12-01T09:00-05:00", "2026-12-01T14:00"),
        ("2026-12-01T09:00Z", "2026-12-01T09:00"),
        ("2026-12-01T09:00 America/Chicago", "2026-12-01T15:00"),
        ("2026-12-01T09:00[Europe/Berlin]", "2026-12-01T08:00"),
        ("2026-12-01 09:00 UTC", "2026-12-01T09:00"),
        ("2026-12-01T09:00-06:00[America/Chicago]", "2026-12-01T15:00"),
    ],
)
def test_a_launch_time_is_read_in_its_zone_or_the_default_one(text: str, utc: str) -> None:
    parsed = parse_time(text, LA)
    assert parsed == dt.datetime.fromisoformat(utc).replace(tzinfo=dt.UTC)
    assert parsed.tzinfo == dt.UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tomorrow", "is not a time; write it like 2026-12-01T09:00"),
        ("2026-12-01T09:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("2026-12-01T09:00-05:00[America/Chicago]", "gives offset -0500 but America/Chicago"),
        ("2027-03-14 02:30", "does not exist in America/Los_Angeles"),
        # at the calendar's ends a time overflowed in UTC or in another zone (500s)
        ("9999-12-31T23:00", "is too far in the past or future"),
        ("0001-01-01T00:00+01:00", "is too far in the past or future"),
    ],
)
def test_a_bad_launch_time_is_refused_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(CampaignError, match=message.replace("[", r"\[")):
        parse_time(text, LA)


def test_times_are_shown_in_the_zone_with_its_name() -> None:
    at = dt.datetime(2026, 12, 1, 17, 0, tzinfo=dt.UTC)
    assert format_time(at, LA) == "Tue 2026-12-01 09:00 PST (America/Los_Angeles)"
    assert format_delay(dt.timedelta(days=2, hours=3, minutes=4)) == "in 2 days 3 hours"
    assert format_delay(dt.timedelta(minutes=5, seconds=3)) == "in 5 minutes"
    assert format_delay(dt.timedelta(hours=1)) == "in 1 hour"


def test_the_default_zone_is_pacific_and_a_wrong_one_is_a_config_error() -> None:
    assert Settings.from_env({}, env_file=None).timezone == LA
    assert Settings.from_env({"MAILER_TIMEZONE": "Europe/Paris"}, env_file=None).timezone
    with pytest.raises(ConfigError, match="MAILER_TIMEZONE='Pacific' is not a time zone"):
        Settings.from_env({"MAILER_TIMEZONE": "Pacific"}, env_file=None)


@pytest.fixture
def cli(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_SECRET_KEY": TEST_SECRET,
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_AUDIENCES_DIR": str(ROOT / "audiences"),
        "MAILER_BROKER_URL": "memory://",
        "MAILER_SMTP_URL": "capture://",
        "MAILER_USER": "ada",
        "MAILER_TIMEZONE": "America/New_York",
    }
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    return run


def _draft(cli) -> int:  # type: ignore[no-untyped-def]
    cli("users", "create", "ada", "--role", "admin", "--name", "Ada", "--email", "ada@cpi.example")
    cli("sample-data", "--organizations", "5", "--seed", "4", "--into-db")
    created = cli(
        "campaign",
        "create",
        "--name",
        "Later",
        "--category",
        "features",
        "--template",
        "features/benefitelect-enrollment-site",
        "--rule",
        "kind = client",
        "--json",
    )
    return int(json.loads(created)["id"])


def test_launch_at_a_past_time_is_refused_and_the_message_names_now(cli) -> None:
    cid = _draft(cli)
    out = cli("campaign", "launch", str(cid), "--at", "2020-01-01T09:00", code=1)
    assert "is in the past" in out and f"mailer campaign launch {cid} --now" in out
    assert "EST (America/New_York)" in out  # shown in MAILER_TIMEZONE
    assert json.loads(cli("campaign", "status", str(cid), "--json"))["status"] == "draft"

    launched = json.loads(
        cli("campaign", "launch", str(cid), "--at", "2020-01-01T09:00", "--now", "--json")
    )
    assert launched["status"] == "completed"


def test_a_scheduled_campaign_says_when_it_will_send_in_the_zone(cli) -> None:
    cid = _draft(cli)
    later = (utcnow() + dt.timedelta(days=3)).astimezone(dt.UTC)
    at = f"{later:%Y-%m-%dT%H:%M} Europe/London"
    scheduled = json.loads(cli("campaign", "launch", str(cid), "--at", at, "--json"))
    assert scheduled["status"] == "scheduled"
    assert scheduled["scheduled_at_local"].endswith("(America/New_York)")

    shown = cli("campaign", "status", str(cid))
    expected = format_time(dt.datetime.fromisoformat(scheduled["scheduled_at"]), "America/New_York")
    assert f"sends {expected}, in 2 days" in shown

    out = cli("campaign", "launch", str(cid), "--at", at, "--now", code=1)
    assert "give one of them" in out
