"""`mailer template list|check|preview`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli._common import acting_option, current_actor, echo_json, parse_params, runtime
from mailer.config import Settings
from mailer.errors import NotFoundError, TemplateError
from mailer.messages import (
    check_template,
    list_templates,
    load_template,
)
from mailer.previews import preview_message


@click.group("template")
def template_group() -> None:
    """List, check and preview email templates."""


@template_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """Every template, with its category and subject."""
    settings = Settings.from_env()
    rows = []
    for name in list_templates(settings):
        try:
            tpl = load_template(settings, name)
            rows.append(
                {
                    "name": name,
                    "category": tpl.category.value,
                    "subject": tpl.subject_source,
                    "params": list(tpl.params),
                }
            )
        except TemplateError as exc:
            rows.append(
                {"name": name, "category": "", "subject": "", "params": [], "error": str(exc)}
            )
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        needs = f"  [--param {', '.join(row['params'])}]" if row["params"] else ""
        shown = row.get("error") or f"{row['subject']}{needs}"
        click.echo(f"{row['name']:<45} {row['category']:<11} {shown}")


@template_group.command("check")
@click.argument("names", nargs=-1)
def check_command(names: tuple[str, ...]) -> None:
    """Load every template (or NAMES) and render it for a sample contact; non-zero on failure."""
    settings = Settings.from_env()
    chosen = list(names) or list_templates(settings)
    if not chosen:
        raise NotFoundError(f"no templates under {settings.templates_dir}")
    failures = 0
    for name in chosen:
        try:
            check_template(settings, name)
        except TemplateError as exc:
            failures += 1
            click.secho(f"FAIL {name}: {exc}", fg="red", err=True)
        else:
            click.echo(f"ok   {name}")
    if failures:
        raise TemplateError(
            str(settings.templates_dir), f"{failures} of {len(chosen)} templates failed (above)"
        )


@template_group.command("preview")
@click.argument("name")
@click.option("--contact", "email", required=True, help="The contact's email address.")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A campaign parameter the template declares; those not given show as [KEY].",
)
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path))
@acting_option
def preview_command(
    name: str, email: str, params: tuple[str, ...], html_file: Path | None, as_username: str
) -> None:
    """Render NAME for a real contact exactly as a campaign sends it: headers and text here,
    the HTML to --html FILE. An account manager may preview only with their own clients."""
    rt = runtime()
    preview = preview_message(
        rt, current_actor(as_username), template=name, contact=email, params=parse_params(params)
    )
    for key, value in preview.headers:
        click.echo(f"{key}: {value}")
    click.echo("")
    click.echo(preview.text)
    if html_file:
        html_file.write_text(preview.html, encoding="utf-8")
        click.echo(f"(HTML written to {html_file})", err=True)


COMMANDS = [template_group]
