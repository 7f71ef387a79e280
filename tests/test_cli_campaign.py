"""`mailer campaign …` end to end through the CLI on the embedded default (in-process broker
and workers, the capture SMTP server writing a Maildir)."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from tests.conftest import ROOT, TEST_SECRET


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
    }
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_a_campaign_runs_from_the_command_line_into_the_maildir(cli, tmp_path: Path) -> None:
    cli("users", "create", "ada", "--role", "admin", "--name", "Ada", "--email", "ada@cpi.example")
    cli("sample-data", "--organizations", "20", "--seed", "4", "--into-db")
    created = json.loads(
        cli(
            "campaign",
            "create",
            "--name",
            "Fall news",
            "--category",
            "features",
            "--template",
            "features/benefitelect-enrollment-site",
            "--rule",
            "kind = client",
            "--json",
        )
    )
    launched = json.loads(cli("campaign", "launch", str(created["id"]), "--json"))
    assert launched["status"] == "completed"
    sent = launched["counts"]["sent"]
    assert sent > 0

    status = json.loads(cli("campaign", "status", str(created["id"]), "--watch", "--json"))
    assert status["counts"]["sent"] == sent and status["rule_text"] == "kind = client"
    listed = json.loads(cli("campaign", "list", "--json"))
    assert [c["id"] for c in listed] == [created["id"]]
    assert len(list(mailbox.Maildir(tmp_path / "var" / "maildir", create=False))) == sent

    # a finished campaign cannot be paused, and the message says why
    out = cli("campaign", "pause", str(created["id"]), code=1)
    assert "it is completed" in out


def test_a_campaign_command_without_a_user_says_how_to_name_one(cli) -> None:
    out = cli(
        "campaign",
        "create",
        "--name",
        "x",
        "--category",
        "features",
        "--template",
        "features/benefitelect-enrollment-site",
        "--as",
        "nobody",
        code=5,
    )
    assert "mailer users create nobody" in out


def test_commands_on_a_database_behind_the_code_say_to_upgrade(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["campaign", "list"],
        env={"MAILER_DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"},
    )
    assert result.exit_code == 3
    assert "run `mailer db upgrade` first" in result.output
    assert "Traceback" not in result.output


def test_campaign_parameters_reach_the_message_and_wrong_ones_are_refused(
    cli, tmp_path: Path
) -> None:
    # Given an admin, some clients, and the webinar template that declares date and time
    cli("users", "create", "ada", "--role", "admin", "--name", "Ada", "--email", "ada@cpi.example")
    cli("sample-data", "--organizations", "3", "--seed", "4", "--into-db")
    create = ["campaign", "create", "--name", "Webinar", "--category", "promotions"]
    create += ["--template", "promotions/benefits-webinar", "--rule", "kind = client"]
    # When a parameter is misspelt, or one is missing, nothing is created and the fix is named
    out = cli(*create, "--param", "date=March 3", "--param", "tme=10 am PT", code=1)
    assert "unknown campaign parameter 'tme'; did you mean 'time'?" in out
    out = cli(*create, "--param", "date=March 3", code=1)
    assert "needs the campaign parameter time; give --param time=…" in out
    assert json.loads(cli("campaign", "list", "--json")) == []
    # When both are given, the campaign sends them in every message
    created = json.loads(
        cli(*create, "--param", "date=March 3", "--param", "time=10 am PT", "--json")
    )
    launched = json.loads(cli("campaign", "launch", str(created["id"]), "--json"))
    assert launched["counts"]["sent"] > 0
    for message in mailbox.Maildir(tmp_path / "var" / "maildir", create=False):
        assert message["Subject"] == "Webinar on March 3: benefits questions, answered live"
        body = message.get_payload()[0].get_payload(decode=True).decode()
        assert "On March 3 at 10 am PT" in body
