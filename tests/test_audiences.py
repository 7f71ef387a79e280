"""Saved audiences (TOML files) and the `mailer audience check|preview` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from mailer.cli import main
from mailer.errors import RuleError
from mailer.models import AuditEvent, OptOut
from mailer.rules import load_audience, load_audiences
from mailer.runtime import Runtime
from tests.delivery_fixtures import as_user

ROOT = Path(__file__).resolve().parent.parent


def write(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(content, encoding="utf-8")
    return path


def test_every_shipped_audience_loads_and_checks() -> None:
    audiences = load_audiences(ROOT / "audiences")
    assert len(audiences) >= 4
    assert "oregon-washington-prospects" in audiences
    for audience in audiences.values():
        assert audience.description and audience.rule is not None
        assert audience.path.parent == ROOT / "audiences"


def test_an_audience_file_gives_name_description_and_rule(tmp_path: Path) -> None:
    write(tmp_path, "west-coast.toml", 'description = "West"\nrule = \'state in ("OR", "WA")\'\n')
    audience = load_audiences(tmp_path)["west-coast"]
    assert (audience.name, audience.description) == ("west-coast", "West")
    assert audience.rule_text == 'state in ("OR", "WA")'


def test_a_rule_error_points_at_the_line_and_column_in_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.toml",
        'description = "has a typo"\nrule = """\nkind = prospect\n  and employes > 50\n"""\n',
    )
    with pytest.raises(RuleError) as caught:
        load_audiences(tmp_path)
    assert str(caught.value) == (
        f"{path}:4:7: unknown field 'employes'; did you mean 'employees'?\n"
        "      and employes > 50\n"
        "          ^"
    )


def test_a_one_line_rule_error_counts_columns_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "one.toml", "description = 'x'\nrule = 'kind = customer'\n")
    with pytest.raises(RuleError) as caught:
        load_audience(path)
    assert (caught.value.line, caught.value.column) == (2, 16)
    assert caught.value.suggestion == "client"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("description = 'x'\n", "'rule' is missing or not a text value"),
        ("rule = 'everyone'\n", "'description' is missing or not a text value"),
        ("description = 'x'\nrule = 'everyone'\ncategory = 'x'\n", "unknown key 'category'"),
        ("description = 'x\nrule = 'everyone'\n", "cannot read the audience file"),
    ],
)
def test_a_malformed_audience_file_is_named_in_the_error(
    tmp_path: Path, content: str, message: str
) -> None:
    path = write(tmp_path, "bad.toml", content)
    with pytest.raises(RuleError, match=message) as caught:
        load_audience(path)
    assert str(caught.value).startswith(str(path))


def test_a_file_name_that_is_no_audience_name_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "Big Clients.toml", "description = 'x'\nrule = 'everyone'\n")
    with pytest.raises(RuleError, match="must be lowercase letters"):
        load_audience(path)


def cli_env(rt: Runtime, audiences: Path) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_AUDIENCES_DIR": str(audiences),
        "MAILER_USER": "cli-marketer",
    }


def test_audience_check_reports_each_file_and_fails_on_errors(rt: Runtime, tmp_path: Path) -> None:
    write(tmp_path, "good.toml", "description = 'Good'\nrule = 'kind = client'\n")
    write(tmp_path, "bad.toml", "description = 'Bad'\nrule = 'kind = customer'\n")
    runner = CliRunner()
    result = runner.invoke(main, ["audience", "check"], env=cli_env(rt, tmp_path))
    assert result.exit_code == 1
    assert "ok  good: Good" in result.output
    assert "did you mean 'client'?" in result.output
    assert "1 of 2 audience files have errors" in result.output
    good = str(tmp_path / "good.toml")
    result = runner.invoke(main, ["audience", "check", "--json", good], env=cli_env(rt, tmp_path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"file": good, "name": "good", "ok": True}]


def test_audience_check_passes_on_the_shipped_audiences(rt: Runtime) -> None:
    result = CliRunner().invoke(main, ["audience", "check"], env=cli_env(rt, ROOT / "audiences"))
    assert result.exit_code == 0, result.output
    assert "ok  oregon-washington-prospects" in result.output


def test_preview_prints_counts_per_guard_and_a_sample(
    rt: Runtime, make_org, make_contact, make_user, tmp_path: Path
) -> None:
    make_user(username="cli-marketer", role="marketing")
    # Given two Oregon clients, one of whom opted out of all marketing
    org = make_org(name="Deschutes Health", state="OR")
    kept = make_contact(organization=org, first_name="Ana", last_name="Lee")
    gone = make_contact(organization=org)
    with rt.sessions.begin() as s:
        s.add(OptOut(address_hash=gone.address_hash, category="all_marketing", source="admin"))
    write(tmp_path, "oregon.toml", "description = 'OR'\nrule = 'state = \"or\"'\n")
    env = cli_env(rt, tmp_path)
    runner = CliRunner()
    # When marketing previews the saved audience as JSON
    result = runner.invoke(
        main, ["audience", "preview", "oregon", "--category", "promotions", "--json"], env=env
    )
    # Then the count, the exclusions and the sample are there
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["audience"], data["eligible"], data["matched"]) == ("oregon", 1, 2)
    assert data["excluded"] == {"opted_out": 1}
    assert data["sample"] == [
        {"email": kept.email, "name": "Ana Lee", "organization": "Deschutes Health"}
    ]
    # and the human output says the same in tables
    result = runner.invoke(
        main, ["audience", "preview", "--rule", "everyone", "--category", "service"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "eligible: 2" in result.output and kept.email in result.output
    # and who looked is in the audit log
    with rt.sessions() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "audience.preview")).all()
    assert [e.actor for e in events] == ["cli-marketer", "cli-marketer"]
    assert events[0].details["excluded"] == {"opted_out": 1}


def test_preview_shows_whole_addresses_however_long(
    rt: Runtime, make_org, make_contact, make_user, tmp_path: Path
) -> None:
    # Given contacts with long addresses and long organization names
    make_user(username="cli-marketer", role="marketing")
    org = make_org(name="The Deschutes County Regional Health and Wellness Partnership Inc")
    emails = [
        "benefits.administration.team@deschutes-regional-health-partnership.example",
        "pat.o-reilly-hernandez@deschutes-regional-health-partnership.example",
    ]
    for email in emails:
        make_contact(organization=org, email=email, first_name="Patricia", last_name="Hernandez")
    # When the human preview is printed (CliRunner's terminal is 80 columns wide)
    args = ["audience", "preview", "--rule", "everyone", "--category", "promotions"]
    result = CliRunner().invoke(main, args, env=cli_env(rt, tmp_path))
    # Then every address is there whole, on one line
    assert result.exit_code == 0, result.output
    for email in emails:
        assert email in result.output


@pytest.mark.parametrize("category", ["service", "promotions", "policy"])
def test_an_account_manager_previews_only_their_own_clients_in_any_category(
    rt: Runtime, make_org, make_contact, make_user, tmp_path: Path, category: str
) -> None:
    dana = make_user(username="dana", role="account_manager")
    lee = make_user(username="lee", role="account_manager")
    own = make_contact(organization=make_org(account_manager_id=dana.id))
    other = make_contact(organization=make_org(account_manager_id=lee.id))
    make_contact(organization=make_org())
    args = ["audience", "preview", "--rule", "kind = client", "--category", category]
    result = CliRunner().invoke(main, [*args, "--as", "dana", "--json"], env=cli_env(rt, tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # other managers' clients are neither listed nor counted
    assert (data["eligible"], data["excluded"]) == (1, {})
    assert [r["email"] for r in data["sample"]] == [own.email]
    assert other.email not in result.output


def test_preview_errors_name_the_problem(rt: Runtime, tmp_path: Path, make_user) -> None:
    make_user(username="cli-marketer", role="marketing")
    env = cli_env(rt, tmp_path)
    runner = CliRunner()
    write(tmp_path, "oregon.toml", "description = 'OR'\nrule = 'state = \"OR\"'\n")
    result = runner.invoke(main, ["audience", "preview", "oregn", "--category", "policy"], env=env)
    assert result.exit_code == 5
    assert (
        "no saved audience 'oregn'" in result.output and "did you mean 'oregon'?" in result.output
    )
    result = runner.invoke(
        main, ["audience", "preview", "--rule", "employes > 5", "--category", "policy"], env=env
    )
    assert result.exit_code == 1
    assert "--rule:1:1: unknown field 'employes'; did you mean 'employees'?" in result.output
    result = runner.invoke(main, ["audience", "preview", "--category", "policy"], env=env)
    assert result.exit_code == 2
    assert "give exactly one of NAME, --rule TEXT or --file F" in result.output
    rule_file = write(tmp_path, "rule.txt", "kind = client  # plain rule file\n")
    result = runner.invoke(
        main, ["audience", "preview", "--file", str(rule_file), "--category", "policy"], env=env
    )
    assert result.exit_code == 0, result.output


def test_audience_list_shows_names_descriptions_and_rules(rt: Runtime, tmp_path: Path) -> None:
    write(tmp_path, "west.toml", "description = 'West'\nrule = 'state in (\"OR\", \"WA\")'\n")
    runner = CliRunner()
    result = runner.invoke(main, ["audience", "list"], env=cli_env(rt, tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output == "west: West\n"
    result = runner.invoke(main, ["audience", "list", "--json"], env=cli_env(rt, tmp_path))
    assert json.loads(result.output) == [
        {"name": "west", "description": "West", "rule": 'state in ("OR", "WA")'}
    ]


def test_preview_as_a_marketer_is_not_limited_to_any_manager(
    rt: Runtime, make_org, make_contact, make_user, tmp_path: Path
) -> None:
    make_user(username="mel", role="marketing")
    make_contact(organization=make_org())
    args = ["audience", "preview", "--rule", "everyone", "--category", "service", "--as", "mel"]
    result = CliRunner().invoke(main, [*args, "--json"], env=cli_env(rt, tmp_path))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["eligible"] == 1
    result = CliRunner().invoke(main, [*args[:-1], "nobody"], env=cli_env(rt, tmp_path))
    assert result.exit_code == 5 and "no mailer user 'nobody'" in result.output


def test_every_lookup_of_a_saved_audience_names_the_nearest_one(
    rt: Runtime, make_user, make_contact, tmp_path: Path
) -> None:
    import datetime as dt

    from mailer import campaigns
    from mailer.delivery import scheduler_tick
    from mailer.errors import NotFoundError
    from mailer.models import Campaign

    # Given a saved audience and a marketer
    write(tmp_path, "oregon-clients.toml", "description = 'OR'\nrule = 'state = \"OR\"'\n")
    local = Runtime(rt.settings.with_(audiences_dir=tmp_path), rt.engine, rt.sessions)
    make_user(username="mel", role="marketing")
    make_contact()
    create: dict[str, Any] = {"actor": as_user(local, "mel"), "name": "x", "category": "features"}
    create["template"] = "features/benefitelect-enrollment-site"
    # When a campaign names it with a typo, the error names the nearest one
    with pytest.raises(NotFoundError, match="did you mean 'oregon-clients'"):
        campaigns.create_campaign(local, audience="oregon-client", **create)
    # When a scheduled campaign's audience is renamed before it fires
    cid = campaigns.create_campaign(local, audience="oregon-clients", **create).id
    now = dt.datetime.now(dt.UTC)
    campaigns.launch_campaign(
        local,
        cid,
        actor=as_user(local, "mel"),
        dispatch=None,
        at=now + dt.timedelta(minutes=5),
        now=now,
    )
    (tmp_path / "oregon-clients.toml").rename(tmp_path / "oregon-customers.toml")
    report = scheduler_tick(local, dispatch=None, now=now + dt.timedelta(minutes=6))
    # Then the scheduler says the same, with the name it found instead
    assert "did you mean 'oregon-customers'?" in report.failed_to_start[cid]
    with rt.sessions() as s:
        assert "did you mean 'oregon-customers'?" in s.get(Campaign, cid).status_detail
