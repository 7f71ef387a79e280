"""A newcomer's first steps, as the README gives them, in a fresh shell."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import required_tools

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _fresh_shell(script: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """`script` in a new login-less bash: none of this session's variables, a bare PATH."""
    return subprocess.run(
        ["/bin/bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _readme_block(heading: str) -> str:
    """The first ```sh block under `heading` in the README."""
    section = README.split(heading, 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no ```sh block under {heading!r} in README.md"
    return match.group(1)


def test_the_readme_says_how_to_get_the_mailer_command_in_a_new_shell(tmp_path: Path) -> None:
    # Given set-up has been run (the suite runs inside that .venv) and a new shell is opened
    block = _readme_block("### The `mailer` command in a new shell")
    assert "mailer" in block
    # When the newcomer types the README's lines there
    result = _fresh_shell(block, ROOT, tmp_path)
    # Then every line works, `mailer` included
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage: mailer" in result.stdout
    assert "command not found" not in result.stderr


def test_the_wrapper_runs_mailer_from_any_directory_reading_that_directorys_env(
    tmp_path: Path,
) -> None:
    # Given a working directory of one's own with a .env naming a database there
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text(f"MAILER_DATABASE_URL=sqlite:///{work / 'mine.db'}\n")
    # When scripts/mailer runs from there without any activation
    result = _fresh_shell(f"{ROOT / 'scripts' / 'mailer'} db upgrade", work, tmp_path)
    # Then mailer ran in that directory, with its settings
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / "mine.db").is_file()


def test_ci_runs_the_checks_before_the_tests() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines.index("scripts/check") < lines.index("exec scripts/test")
    assert "scripts/packages" in (ROOT / "scripts" / "test").read_text()


def test_a_missing_program_is_a_skip_on_a_laptop_and_a_failure_as_root_or_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(required_tools.PACKAGES, "/nonexistent/smtp-sink", "postfix")
    monkeypatch.setattr(required_tools, "must_not_skip", lambda: False)
    with pytest.raises(pytest.skip.Exception, match="install the Debian package postfix"):
        required_tools.require("/nonexistent/smtp-sink")
    monkeypatch.setattr(required_tools, "must_not_skip", lambda: True)
    with pytest.raises(pytest.fail.Exception, match="no test may be skipped"):
        required_tools.require("/nonexistent/smtp-sink")


def test_as_root_every_program_the_tests_need_is_installed() -> None:
    # scripts/test ran scripts/packages before the suite: nothing may be missing now
    if not required_tools.must_not_skip():
        pytest.skip("on a laptop scripts/test only warns about missing programs")
    assert [p for p in required_tools.PACKAGES if not Path(p).exists()] == []
