"""`mailer audience …`: check saved audiences and preview who a rule reaches."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mailer.cli._common import acting, echo_json, runtime
from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import NotFoundError, RuleError
from mailer.rules import (
    Preview,
    get_audience,
    load_audience,
    load_audiences,
    parse_rule,
    preview_audience,
)
from mailer.rules.nodes import Rule


@click.group("audience")
def audience_group() -> None:
    """Check saved audiences and preview audience rules."""


@audience_group.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Parse and type-check saved audiences (default: every file in the audiences folder)."""
    settings = Settings.from_env()
    paths = list(files) or sorted(settings.audiences_dir.glob("*.toml"))
    if not paths:
        raise NotFoundError(f"no audience files (*.toml) in {settings.audiences_dir}")
    results: list[dict[str, str | bool]] = []
    for path in paths:
        try:
            audience = load_audience(path)
        except RuleError as exc:
            results.append({"file": str(path), "ok": False, "error": str(exc)})
            if not as_json:
                click.secho(str(exc), fg="red", err=True)
            continue
        results.append({"file": str(path), "ok": True, "name": audience.name})
        if not as_json:
            click.echo(f"ok  {audience.name}: {audience.description}")
    if as_json:
        echo_json(results)
    failed = sum(1 for r in results if not r["ok"])
    if failed:
        raise RuleError(
            f"{failed} of {len(results)} audience files have errors (shown above)",
            source=str(settings.audiences_dir),
        )


@audience_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """List saved audiences (all are checked first)."""
    settings = Settings.from_env()
    audiences = load_audiences(settings.audiences_dir)
    if as_json:
        echo_json(
            [
                {"name": a.name, "description": a.description, "rule": a.rule_text.strip()}
                for a in audiences.values()
            ]
        )
        return
    for audience in audiences.values():
        click.echo(f"{audience.name}: {audience.description}")


@audience_group.command("preview")
@click.argument("name", required=False)
@click.option("--rule", "rule_text", help="A rule given on the command line.")
@click.option(
    "--file",
    "rule_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An audience file (.toml) or a file holding just a rule.",
)
@click.option(
    "--category", required=True, type=click.Choice([c.value for c in Category]), help="Category."
)
@click.option(
    "--as",
    "as_username",
    envvar="MAILER_USER",
    default="",
    metavar="USERNAME",
    help="Act as this user (default: $MAILER_USER); an account manager sees only their clients.",
)
@click.option("--sample", "sample_size", default=10, show_default=True, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def preview_command(
    name: str | None,
    rule_text: str | None,
    rule_file: Path | None,
    category: str,
    as_username: str | None,
    sample_size: int,
    as_json: bool,
) -> None:
    """Count who a rule reaches in CATEGORY, what each guard excludes, and show a sample.

    Give the rule one way: --rule TEXT, --file F, or the NAME of a saved audience.
    """
    if sum(x is not None for x in (name, rule_text, rule_file)) != 1:
        raise click.UsageError("give exactly one of NAME, --rule TEXT or --file F")
    rt = runtime()
    label, rule = _rule_from(rt.settings, name, rule_text, rule_file)
    with rt.sessions.begin() as session:
        result = preview_audience(
            session,
            acting(session, as_username),
            rule,
            Category(category),
            settings=rt.settings,
            label=label,
            sample_size=sample_size,
        )
    if as_json:
        echo_json({"audience": label, **result.as_dict()})
    else:
        _print_preview(label, result, category)


def _rule_from(
    settings: Settings, name: str | None, rule_text: str | None, rule_file: Path | None
) -> tuple[str, Rule]:
    if rule_text is not None:
        return "--rule", parse_rule(rule_text, "--rule")
    if rule_file is not None:
        if rule_file.suffix == ".toml":
            audience = load_audience(rule_file)
            assert audience.rule is not None
            return audience.name, audience.rule
        return str(rule_file), parse_rule(rule_file.read_text(encoding="utf-8"), str(rule_file))
    assert name is not None
    audience = get_audience(settings.audiences_dir, name)
    assert audience.rule is not None
    return audience.name, audience.rule


def _print_preview(label: str, result: Preview, category: str) -> None:
    console = Console()
    console.print(f"[bold]{escape(label)}[/bold] as [bold]{category}[/bold] mail")
    console.print(f"matched by the rule: {result.matched}")
    console.print(f"[green]eligible: {result.eligible}[/green]")
    if result.excluded:
        table = Table("excluded by guard", "contacts")
        for reason, count in sorted(result.excluded.items(), key=lambda kv: -kv[1]):
            table.add_row(reason.replace("_", " "), str(count))
        console.print(table)
    if result.sample:
        table = Table(title=f"first {len(result.sample)}")
        # an address cut short is a different address: the email column never shrinks or
        # folds; names and organizations wrap instead
        longest = max(len(recipient.email) for recipient in result.sample)
        table.add_column("email", no_wrap=True, min_width=longest)
        table.add_column("name", overflow="fold")
        table.add_column("organization", overflow="fold")
        for recipient in result.sample:
            table.add_row(*(escape(v) for v in vars(recipient).values()))
        console.print(table)


COMMANDS = [audience_group]
