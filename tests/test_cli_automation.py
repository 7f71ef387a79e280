"""The command line for scripts: `campaign wait` exit codes, `--json` on every campaign, users,
sample-data and policy command, and errors as JSON when `--json` is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailer.access import SYSTEM
from mailer.campaigns.lifecycle import transition
from mailer.cli import WAIT_EXIT_CODES, main
from mailer.db import make_engine, make_sessionmaker
from mailer.enums import CampaignStatus
from tests.conftest import ROOT, TEST_SECRET


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": database_url,
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_SECRET_KEY": TEST_SECRET,
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_AUDIENCES_DIR": str(ROOT / "audiences"),
        "MAILER_BROKER_URL": "memory://",
        "MAILER_SMTP_URL": "capture://",
        "MAILER_USER": "ada",
    }


@pytest.fixture
def cli(env: dict[str, str]):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == code, result.output
        return result

    return run


def _json(result: Any) -> Any:
    return json.loads(result.stdout)


def _set_up(cli) -> None:  # type: ignore[no-untyped-def]
    created = _json(
        cli(
            "users",
            "create",
            "ada",
            "--role",
            "admin",
            "--name",
            "Ada",
            "--email",
            "ada@cpi.example",
            "--json",
        )
    )
    assert created == {
        "username": "ada",
        "role": "admin",
        "email": "ada@cpi.example",
        "display_name": "Ada",
        "has_password": False,
        "is_first_admin": True,
    }
    loaded = _json(cli("sample-data", "--organizations", "6", "--seed", "3", "--into-db", "--json"))
    assert loaded["organizations"] == 6 and loaded["contacts"] > 0


def _draft(cli, name: str = "News") -> int:  # type: ignore[no-untyped-def]
    created = cli(
        "campaign",
        "create",
        "--name",
        name,
        "--category",
        "features",
        "--template",
        "features/benefitelect-enrollment-site",
        "--rule",
        "kind = client",
        "--json",
    )
    return int(_json(created)["id"])


def _force(database_url: str, campaign_id: int, status: CampaignStatus, detail: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            assert transition(s, campaign_id, status, actor=SYSTEM, action="x", detail=detail)
    finally:
        engine.dispose()


def test_wait_exits_0_when_completed_and_prints_the_summary(cli) -> None:
    _set_up(cli)
    cid = _draft(cli)
    assert _json(cli("campaign", "launch", str(cid), "--json"))["status"] == "completed"

    waited = _json(cli("campaign", "wait", str(cid), "--timeout", "5", "--json"))
    assert waited["status"] == "completed" and waited["counts"]["sent"] > 0
    assert "completed:" in cli("campaign", "wait", str(cid)).output


def test_wait_names_each_way_a_campaign_does_not_complete_with_its_own_exit_code(
    cli, database_url: str
) -> None:
    _set_up(cli)
    assert len(set(WAIT_EXIT_CODES.values())) == len(WAIT_EXIT_CODES)

    draft = _draft(cli, "never launched")
    out = cli("campaign", "wait", str(draft), code=14).output
    assert f"is a draft, never launched: `mailer campaign launch {draft}`" in out

    cancelled = _draft(cli, "cancelled")
    assert _json(cli("campaign", "cancel", str(cancelled), "--json"))["status"] == "cancelled"
    error = _json(cli("campaign", "wait", str(cancelled), "--json", code=10))
    assert error == {
        "error": f"campaign {cancelled} was cancelled: cancelled by ada",
        "exit_code": 10,
        "outcome": "cancelled",
        "campaign_id": cancelled,
    }

    scheduled = _draft(cli, "later")
    cli("campaign", "launch", str(scheduled), "--at", "2099-01-01T09:00")
    error = _json(cli("campaign", "wait", str(scheduled), "--timeout", "0.3", "--json", code=13))
    assert error["outcome"] == "timeout" and "still scheduled after 0.3 s" in error["error"]

    _force(database_url, scheduled, CampaignStatus.MISSED, "missed its start at …")
    assert "missed its start" in cli("campaign", "wait", str(scheduled), code=12).output

    failing = _draft(cli, "failing")
    cli("campaign", "launch", str(failing), "--at", "2099-01-01T09:00")
    _force(database_url, failing, CampaignStatus.FAILED, "could not start: template gone")
    out = cli("campaign", "wait", str(failing), code=11).output
    assert "failed: could not start: template gone" in out

    assert _json(cli("campaign", "wait", "999", "--json", code=5))["exit_code"] == 5


def test_every_campaign_command_speaks_json(cli) -> None:
    _set_up(cli)
    cid = _draft(cli)
    launched = _json(cli("campaign", "launch", str(cid), "--at", "2099-01-01T09:00", "--json"))
    assert launched["status"] == "scheduled"
    assert _json(cli("campaign", "status", str(cid), "--json"))["id"] == cid
    assert [c["id"] for c in _json(cli("campaign", "list", "--json"))] == [cid]

    cid2 = _draft(cli, "now")
    assert _json(cli("campaign", "launch", str(cid2), "--json"))["status"] == "completed"
    # pause, resume and cancel answer with the campaign as it is afterwards
    error = _json(cli("campaign", "pause", str(cid2), "--json", code=1))
    assert "it is completed" in error["error"] and error["exit_code"] == 1
    cancelled = _json(cli("campaign", "cancel", str(cid), "--json"))
    assert (cancelled["id"], cancelled["status"]) == (cid, "cancelled")
    error = _json(cli("campaign", "resume", str(cid), "--json", code=1))
    assert "cannot resume campaign" in error["error"]


def test_pause_and_resume_of_a_running_campaign_answer_in_json(cli, database_url: str) -> None:
    _set_up(cli)
    cid = _draft(cli)
    cli("campaign", "launch", str(cid), "--at", "2099-01-01T09:00")
    _force(database_url, cid, CampaignStatus.SENDING, "")  # sending, nothing planned
    paused = _json(cli("campaign", "pause", str(cid), "--json"))
    assert paused["status"] == "paused" and paused["status_detail"] == "paused by ada"
    resumed = _json(cli("campaign", "resume", str(cid), "--json"))
    assert resumed["status"] == "completed"  # nothing was outstanding: resume completes it


def test_errors_are_json_when_json_is_asked_for_and_text_otherwise(cli) -> None:
    _set_up(cli)
    error = _json(cli("campaign", "status", "999", "--json", code=5))
    assert error == {
        "error": "no campaign 999; `mailer campaign list` shows them",
        "exit_code": 5,
    }
    text = cli("campaign", "status", "999", code=5)
    assert text.stdout == "" and "error: no campaign 999" in text.stderr

    # usage errors too
    usage = _json(cli("campaign", "launch", "--json", code=2))
    assert "Missing argument 'CAMPAIGN_ID'" in usage["error"] and usage["exit_code"] == 2
    bad = _json(cli("campaign", "launch", "1", "--at", "next tuesday", "--json", code=1))
    assert "is not a time" in bad["error"]
    denied = _json(
        cli(
            "campaign",
            "create",
            "--name",
            "x",
            "--category",
            "features",
            "--template",
            "features/no-such",
            "--json",
            code=1,
        )
    )
    assert "no-such" in denied["error"]


def test_policy_commands_speak_json_and_fail_in_json(cli, tmp_path: Path) -> None:
    _set_up(cli)
    text, summary = tmp_path / "p.txt", tmp_path / "s.txt"
    text.write_text((ROOT / "mailer" / "data" / "privacy-policy-1.txt").read_text() + "\nMore.\n")
    summary.write_text("What changed.\n- One thing.\n")
    args = ["policy", "publish", "--version", "2", "--effective", "2027-01-01"]
    args += ["--text", str(text), "--summary", str(summary), "--material", "--json"]
    published = _json(cli(*args))
    assert published["campaign_id"] is not None
    waited = _json(cli("campaign", "wait", str(published["campaign_id"]), "--json"))
    assert waited["status"] == "completed"
    assert {v["version"] for v in _json(cli("policy", "list", "--json"))} == {"1", "2"}
    assert _json(cli("policy", "coverage", "2", "--json"))["version"] == "2"
    again = _json(cli(*args, code=1))
    assert "already published" in again["error"]
