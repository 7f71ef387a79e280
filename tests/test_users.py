"""Users: creation with argon2 passwords, look-up with helpful errors, the CLI, the audit log."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.access.users import UserError, add_user, get_user, verify_password
from mailer.errors import NotFoundError
from mailer.models import AuditEvent, User
from mailer.runtime import Runtime


def make(session, **kw) -> User:
    values = {
        "username": "dana",
        "display_name": "Dana Rivera",
        "email": "Dana.Rivera@CPI.example",
        "role": "account_manager",
        "audited_as": "tester",
    }
    values.update(kw)
    return add_user(session, **values)


def test_a_created_user_has_a_verifiable_argon2_hash(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        user = make(s, password="correct horse battery", phone="541-555-0101")
    assert user.password_hash.startswith("$argon2")
    assert verify_password(user, "correct horse battery")
    assert not verify_password(user, "wrong")
    assert user.email == "Dana.Rivera@cpi.example"


def test_a_user_without_a_password_never_verifies(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        user = make(s)
    assert user.password_hash == "" and not verify_password(user, "")


def test_creating_a_user_is_audited(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        make(s, password="long enough password")
    with rt.sessions() as s:
        event = s.scalars(select(AuditEvent)).one()
    assert (event.action, event.object_id, event.actor) == ("user.create", "dana", "tester")
    assert event.details == {"role": "account_manager", "has_password": True}
    assert "long enough" not in json.dumps(event.details)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"username": "Dana Rivera"}, "invalid username"),
        ({"role": "boss"}, "unknown role 'boss': choose one of admin"),
        ({"email": "not-an-email"}, "invalid email"),
        ({"display_name": " "}, "needs a display name"),
    ],
)
def test_bad_user_details_are_refused_with_the_fix(rt: Runtime, changes, message) -> None:
    with rt.sessions.begin() as s, pytest.raises(UserError, match=message):
        make(s, **changes)


def test_a_duplicate_username_is_refused(rt: Runtime) -> None:
    with rt.sessions.begin() as s:
        make(s)
    with rt.sessions.begin() as s, pytest.raises(UserError, match="already exists"):
        make(s)


def test_an_unknown_user_names_the_command_that_creates_it(rt: Runtime) -> None:
    with rt.sessions() as s, pytest.raises(NotFoundError, match="mailer users create nobody"):
        get_user(s, "nobody")


def test_get_user_finds_a_user(rt: Runtime, make_user) -> None:
    make_user(username="mark", role="marketing")
    with rt.sessions() as s:
        assert get_user(s, "mark").role == "marketing"


def cli_env(rt: Runtime) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_USER": "cli-admin",
    }


def test_users_create_and_list_through_the_cli(rt: Runtime, make_user) -> None:
    from mailer.cli import main

    make_user(username="cli-admin", role="admin")
    runner = CliRunner()
    args = ["users", "create", "dana", "--role", "account_manager", "--name", "Dana Rivera"]
    args += ["--email", "dana@cpi.example", "--phone", "541-555-0101", "--password-stdin"]
    result = runner.invoke(main, args, input="s3cret-s3cret\n", env=cli_env(rt))
    assert result.exit_code == 0, result.output
    listed = runner.invoke(main, ["users", "list", "--json"], env=cli_env(rt))
    [_, user] = json.loads(listed.output)
    assert user["username"] == "dana" and user["has_password"] is True
    with rt.sessions() as s:
        assert verify_password(get_user(s, "dana"), "s3cret-s3cret")
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.create")).one()
        assert event.actor == "cli-admin"


def test_the_cli_refuses_a_duplicate_user_with_a_message(rt: Runtime, make_user) -> None:
    from mailer.cli import main

    make_user(username="dana")
    make_user(username="cli-admin", role="admin")
    args = ["users", "create", "dana", "--role", "admin", "--name", "D", "--email", "d@cpi.example"]
    result = CliRunner().invoke(main, args, env=cli_env(rt))
    assert result.exit_code == 1 and "already exists" in result.output
