from __future__ import annotations

import mailbox
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main


def test_demo_runs_a_promotion_and_a_service_notice_into_a_maildir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["demo", "--organizations", "40", "--seed", "5"],
        env={"MAILER_VAR_DIR": str(tmp_path / "var")},
    )
    assert result.exit_code == 0, result.output
    assert "completed" in result.output
    assert "promotions" in result.output and "service" in result.output
    maildir = mailbox.Maildir(tmp_path / "var" / "demo" / "maildir", create=False)
    messages = list(maildir)
    assert len(messages) > 20
    assert f"{len(messages)} messages" in result.output
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in messages)
