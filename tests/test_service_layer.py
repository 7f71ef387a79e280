"""One service layer: the core checks the acting user's role, whatever front end calls it.

Each test replays one of the problems found by trying mailer as a new user would (issue 13),
through the core and through the CLI, and checks the refusal is audited.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer import campaigns, policy
from mailer.access import Actor
from mailer.cli import main
from mailer.contacts.importer import import_contacts
from mailer.enums import Role
from mailer.errors import ContactImportError, PermissionDeniedError
from mailer.models import AuditEvent, Campaign, Contact, Organization, User
from mailer.retention import run_retention
from mailer.runtime import Runtime
from tests.conftest import ROOT


def as_actor(user: User) -> Actor:
    return Actor(user.id, user.username, Role(user.role), "cli")


def env(rt: Runtime, user: str | None) -> dict[str, str]:
    values = {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_VAR_DIR": str(Path(rt.settings.var_dir)),
        "MAILER_TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_AUDIENCES_DIR": str(ROOT / "audiences"),
    }
    if user is not None:
        values["MAILER_USER"] = user
    return values


def run(rt: Runtime, user: str | None, *args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), env=env(rt, user), input=input)


def denials(rt: Runtime) -> list[AuditEvent]:
    with rt.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == "denied")))


# --- "anyone with a shell acts as any user" ---------------------------------------------------


def test_mailer_user_must_name_an_existing_active_user(rt: Runtime, make_user) -> None:
    make_user(username="ada", role="admin")
    result = run(rt, "admin", "users", "list")
    assert result.exit_code == 5 and "no mailer user 'admin'" in result.output
    result = run(rt, None, "users", "list")
    assert result.exit_code == 4 and "set MAILER_USER=USERNAME" in result.output
    make_user(username="gone", role="admin", is_active=False)
    result = run(rt, "gone", "users", "list")
    assert result.exit_code == 4 and "'gone' is disabled" in result.output


def test_a_marketing_user_cannot_create_an_admin(rt: Runtime, make_user) -> None:
    make_user(username="ada", role="admin")
    make_user(username="mel", role="marketing")
    args = ["users", "create", "evil", "--role", "admin", "--name", "E", "--email", "e@x.example"]
    result = run(rt, "mel", *args)
    assert result.exit_code == 4 and "only an admin may create users" in result.output
    result = run(rt, None, *args)
    assert result.exit_code == 4
    with rt.sessions() as s:
        assert s.scalar(select(User).where(User.username == "evil")) is None
    [denied] = denials(rt)
    assert (denied.actor, denied.object_id, denied.details["action"]) == (
        "mel",
        "evil",
        "user.create",
    )


def test_the_first_admin_is_created_without_mailer_user(rt: Runtime) -> None:
    args = ["users", "create", "ada", "--role", "admin", "--name", "Ada", "--email", "a@x.example"]
    result = run(rt, None, *args, "--password-stdin", input="a long enough password\n")
    assert result.exit_code == 0, result.output
    assert "first admin: set MAILER_USER=ada" in result.output
    args = ["users", "create", "mel", "--role", "marketing", "--name", "M", "--email", "m@x.ex"]
    assert run(rt, None, *args).exit_code == 4
    assert run(rt, "ada", *args).exit_code == 0


def test_users_commands_for_an_admin(rt: Runtime, make_user) -> None:
    make_user(username="ada", role="admin")
    make_user(username="mel", role="marketing")
    assert run(rt, "ada", "users", "set-role", "mel", "account_manager").exit_code == 0
    assert run(rt, "ada", "users", "disable", "mel").exit_code == 0
    listed = json.loads(run(rt, "ada", "users", "list", "--json").output)
    mel = next(u for u in listed if u["username"] == "mel")
    assert (mel["role"], mel["is_active"]) == ("account_manager", False)
    assert run(rt, "mel", "users", "list").exit_code == 4  # disabled: refused
    assert run(rt, "ada", "users", "enable", "mel").exit_code == 0
    result = run(rt, "ada", "users", "set-password", "mel", "--password-stdin", input="short\n")
    assert result.exit_code == 1 and "at least 12" in result.output
    result = run(
        rt, "ada", "users", "set-password", "mel", "--password-stdin", input="x" * 12 + "\n"
    )
    assert result.exit_code == 0, result.output
    result = run(rt, "ada", "users", "list-sessions", "mel", "--json")
    assert result.exit_code == 0 and json.loads(result.output) == []
    result = run(rt, "mel", "users", "logout-everywhere")
    assert result.exit_code == 0 and "out of 0 session(s)" in result.output
    result = run(rt, "mel", "users", "logout-everywhere", "ada")
    assert result.exit_code == 4
    result = run(rt, "mel", "users", "disable", "ada")
    assert result.exit_code == 4 and "only an admin may manage users" in result.output


def test_tokens_commands_print_the_token_once(rt: Runtime, make_user) -> None:
    make_user(username="ada", role="admin")
    make_user(username="mel", role="marketing")
    created = run(rt, "ada", "tokens", "create", "crm-sync", "--user", "mel")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("mlr_")
    listed = run(rt, "ada", "tokens", "list", "--json")
    [info] = json.loads(listed.output)
    assert info["username"] == "mel" and token not in listed.output
    assert token.split("_")[2] not in listed.output
    assert run(rt, "mel", "tokens", "list").exit_code == 4
    assert run(rt, "ada", "tokens", "revoke", info["public_id"]).exit_code == 0
    assert json.loads(run(rt, "ada", "tokens", "list", "--json").output) == []


# --- "an account manager sees and moves other managers' clients" ------------------------------


def test_an_account_managers_preview_never_shows_another_managers_clients(
    rt: Runtime, make_user, make_org, make_contact
) -> None:
    dana = make_user(username="dana", role="account_manager")
    lee = make_user(username="lee", role="account_manager")
    mine = make_contact(organization=make_org(account_manager_id=dana.id))
    theirs = make_contact(organization=make_org(account_manager_id=lee.id))
    args = ["audience", "preview", "--rule", "kind = client", "--category", "service", "--json"]
    result = run(rt, "dana", *args)
    assert result.exit_code == 0, result.output
    assert mine.email in result.output and theirs.email not in result.output
    assert run(rt, None, *args).exit_code == 4


HEADER = ["external_id", "kind", "organization_name", "account_manager", "email"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_an_account_manager_imports_only_their_own_clients(
    rt: Runtime, tmp_path: Path, make_user, make_org, make_contact
) -> None:
    # Given Dana's client, Lee's client (with a contact) and an unassigned prospect
    dana = make_user(username="dana", role="account_manager")
    lee = make_user(username="lee", role="account_manager")
    make_org(external_id="D-1", account_manager_id=dana.id)
    lees = make_org(external_id="L-1", account_manager_id=lee.id)
    make_contact(organization=lees, email="pat@lee-client.example")
    rows = [
        ["D-1", "client", "Dana's client", "", "new@dana-client.example"],
        ["L-1", "client", "Lee's client", "dana", "grab@lee-client.example"],
        ["N-1", "client", "New client", "lee", "x@new.example"],
        ["P-1", "prospect", "A prospect", "", "p@prospect.example"],
        ["N-2", "client", "Another new client", "", "pat@lee-client.example"],
    ]
    path = write_csv(tmp_path / "c.csv", rows)
    # When Dana imports it, nothing is written and each bad row is named with its column
    with pytest.raises(ContactImportError) as caught:
        import_contacts(rt, path, actor=as_actor(dana))
    found = {(p.row, p.column) for p in caught.value.problems}
    assert found == {(3, "external_id"), (4, "account_manager"), (5, "kind"), (6, "email")}
    [lee_row] = [p for p in caught.value.problems if p.row == 3]
    assert "a client of 'lee'" in lee_row.reason
    with rt.sessions() as s:
        assert s.scalar(select(Organization.account_manager_id).where(
            Organization.external_id == "L-1")) == lee.id  # fmt: skip
        assert s.scalar(select(Contact).where(Contact.email == "new@dana-client.example")) is None
    # And her own rows import, the new client becoming hers
    path = write_csv(
        tmp_path / "ok.csv",
        [
            ["D-1", "client", "Dana's client", "", "new@dana-client.example"],
            ["N-3", "client", "Her new client", "dana", "a@n3.example"],
        ],
    )
    report = import_contacts(rt, path, actor=as_actor(dana))
    assert (report.organizations_created, report.contacts_created) == (1, 2)
    with rt.sessions() as s:
        assert s.scalar(select(Organization.account_manager_id).where(
            Organization.external_id == "N-3")) == dana.id  # fmt: skip


def test_an_account_managers_file_without_the_column_assigns_new_clients_to_them(
    rt: Runtime, tmp_path: Path, make_user
) -> None:
    dana = make_user(username="dana", role="account_manager")
    header = ["external_id", "kind", "organization_name", "email"]
    path = write_csv(tmp_path / "c.csv", [["N-1", "client", "New", "a@n1.example"]], header)
    import_contacts(rt, path, actor=as_actor(dana))
    with rt.sessions() as s:
        assert s.scalar(select(Organization.account_manager_id)) == dana.id


def test_marketing_cannot_import_and_the_refusal_is_audited(
    rt: Runtime, tmp_path: Path, make_user
) -> None:
    make_user(username="mel", role="marketing")
    path = write_csv(tmp_path / "c.csv", [["N-1", "client", "New", "", "a@n1.example"]])
    result = run(rt, "mel", "import", str(path))
    assert result.exit_code == 4 and "contacts.import needs the role" in result.output
    [denied] = denials(rt)
    assert (denied.actor, denied.object_type, denied.object_id) == ("mel", "file", "c.csv")
    with rt.sessions() as s:
        assert s.scalar(select(Organization)) is None


# --- "retention run and policy coverage have no role check" -----------------------------------


def test_retention_is_for_admins_only(rt: Runtime, make_user) -> None:
    mel = make_user(username="mel", role="marketing")
    with pytest.raises(PermissionDeniedError, match="only an admin may run retention"):
        run_retention(rt, actor=as_actor(mel), dry_run=True)
    result = run(rt, "mel", "retention", "run")
    assert result.exit_code == 4
    assert [d.details["action"] for d in denials(rt)] == ["retention.run", "retention.run"]
    make_user(username="ada", role="admin")
    assert run(rt, "ada", "retention", "run", "--dry-run").exit_code == 0


# --- campaigns: category by role, owner or admin to change ------------------------------------


def draft(rt: Runtime, created_by: str, category: str = "promotions") -> int:
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name="Draft", category=category, template="t", created_by=created_by, status="draft"
        )
        s.add(campaign)
        s.flush()
        return campaign.id


def test_roles_limit_the_categories_a_user_may_create(rt: Runtime, make_user) -> None:
    mel = as_actor(make_user(username="mel", role="marketing"))
    amy = as_actor(make_user(username="amy", role="account_manager"))
    for actor, category, needed in (
        (mel, "service", "account_manager or admin"),
        (amy, "promotions", "admin or marketing"),
        (mel, "policy", "admin"),
    ):
        with pytest.raises(PermissionDeniedError, match=f"campaigns need the role {needed}"):
            campaigns.create_campaign(
                rt, actor=actor, name="x", category=category, template="features/x"
            )
    assert [d.actor for d in denials(rt)] == ["mel", "amy", "mel"]


def test_only_the_creator_or_an_admin_changes_a_campaign(rt: Runtime, make_user) -> None:
    make_user(username="mel", role="marketing")
    other = as_actor(make_user(username="max", role="marketing"))
    ada = as_actor(make_user(username="ada", role="admin"))
    cid = draft(rt, "mel")
    with pytest.raises(PermissionDeniedError, match="belongs to 'mel'"):
        campaigns.launch_campaign(rt, cid, actor=other, dispatch=None)
    with pytest.raises(PermissionDeniedError, match="belongs to 'mel'"):
        campaigns.cancel_campaign(rt, cid, actor=other)
    campaigns.cancel_campaign(rt, cid, actor=ada)
    assert campaigns.campaign_status(rt, cid, actor=ada).status == "cancelled"
    assert [d.details["action"] for d in denials(rt)] == ["campaign.launch", "campaign.cancel"]


def test_an_account_manager_sees_only_their_own_campaigns(rt: Runtime, make_user) -> None:
    amy = as_actor(make_user(username="amy", role="account_manager"))
    make_user(username="lee", role="account_manager")
    mine, theirs = draft(rt, "amy", "service"), draft(rt, "lee", "service")
    assert [c.id for c in campaigns.list_campaigns(rt, actor=amy)] == [mine]
    with pytest.raises(PermissionDeniedError, match="not one of yours"):
        campaigns.campaign_status(rt, theirs, actor=amy)
    result = run(rt, "amy", "campaign", "list", "--json")
    assert [c["id"] for c in json.loads(result.output)] == [mine]
    assert run(rt, "amy", "campaign", "status", str(theirs)).exit_code == 4


# --- policy: publish, coverage, resend are for admins -----------------------------------------


def test_policy_publish_coverage_and_resend_are_for_admins(rt: Runtime, make_user) -> None:
    mel = as_actor(make_user(username="mel", role="marketing"))
    with pytest.raises(PermissionDeniedError, match="only an admin may publish"):
        policy.publish_policy(
            rt,
            version="2",
            effective_on=dt.date(2027, 1, 1),
            text="text",
            summary="s\n- x\n",
            is_material=False,
            actor=mel,
            dispatch=None,
        )
    with pytest.raises(PermissionDeniedError, match="coverage report"):
        policy.coverage(rt, "1", actor=mel)
    with pytest.raises(PermissionDeniedError, match="resend"):
        policy.resend_notice(rt, "1", actor=mel, dispatch=None)
    result = run(rt, "mel", "policy", "coverage", "1")
    assert result.exit_code == 4 and "only an admin" in result.output
    actions = [d.details["action"] for d in denials(rt)]
    assert actions == ["policy.publish", "policy.coverage", "policy.resend", "policy.coverage"]


def test_totp_commands_for_admins(rt: Runtime, make_user) -> None:
    make_user(username="ada", role="admin")
    make_user(username="mel", role="marketing", totp_enabled=True, totp_secret="ABCDEFGH")
    result = run(rt, "ada", "users", "require-totp", "on")
    assert result.exit_code == 1 and "set up your own authenticator app first" in result.output
    assert run(rt, "mel", "users", "reset-totp", "ada").exit_code == 4
    result = run(rt, "ada", "users", "reset-totp", "mel")
    assert result.exit_code == 0, result.output
    with rt.sessions() as s:
        mel = s.scalar(select(User).where(User.username == "mel"))
        assert mel is not None and not mel.totp_enabled and mel.totp_secret == ""
