"""`mailer template list|check|preview`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer import template_store
from mailer.cli._common import acting_option, current_actor, echo_json, parse_params, runtime
from mailer.config import Settings
from mailer.errors import NotFoundError, TemplateError
from mailer.messages import (
    check_template,
    list_templates,
    load_template,
)
from mailer.messages.templates import HEADER, read_header
from mailer.previews import preview_message


@click.group("template")
def template_group() -> None:
    """List, check and preview email templates."""


@template_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(as_json: bool) -> None:
    """Every built-in template, with its category and subject (`template stored` lists the
    stored ones)."""
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


@template_group.command("stored")
@acting_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stored_command(as_username: str, as_json: bool) -> None:
    """Stored templates (edited in the browser or saved here) and their latest versions."""
    rt = runtime()
    with rt.sessions() as session:
        infos = template_store.list_stored(session, current_actor(as_username))
    if as_json:
        echo_json([info.as_dict() for info in infos])
        return
    for info in infos:
        latest = info.latest
        shown = f"v{latest.number}  {latest.subject}" if latest else "(no version)"
        click.echo(f"{info.name:<45} {info.category.value:<11} {shown}")


@template_group.command("versions")
@click.argument("name")
@acting_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the sources).")
def versions_command(name: str, as_username: str, as_json: bool) -> None:
    """Every version of stored template NAME, newest first."""
    rt = runtime()
    with rt.sessions() as session:
        info, versions = template_store.get_stored(session, current_actor(as_username), name)
    if as_json:
        echo_json({**info.as_dict(), "versions": [v.as_dict() for v in versions]})
        return
    for v in versions:
        note = f"  {v.note}" if v.note else ""
        click.echo(
            f"v{v.number:<4} {v.created_at[:19]}  {v.author:<12} {v.content_hash[:12]}{note}"
        )


@template_group.command("save")
@click.argument("name")
@click.option(
    "--html",
    "html_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The HTML content; a {# subject: … params: … #} header, if any, gives the defaults.",
)
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--subject", default="", help="The subject (else the file header's).")
@click.option("--params", default=None, help="Campaign parameters, comma-separated.")
@click.option("--note", default="", help="What changed.")
@click.option("--base-version", type=int, default=None, help="Refuse if newer than this exists.")
@acting_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def save_command(
    name: str,
    html_file: Path,
    text_file: Path | None,
    subject: str,
    params: str | None,
    note: str,
    base_version: int | None,
    as_username: str,
    as_json: bool,
) -> None:
    """Save a new version of stored template NAME (category/name) from files, checked like
    `template check`; a failing check saves nothing and names each problem's line."""
    source = html_file.read_text(encoding="utf-8")
    offset = 0  # lines of the file before the stored content (its header)
    found = HEADER.match(source)
    if found:
        header, _ = read_header(source, str(html_file))
        if header["category"] != name.partition("/")[0]:
            raise click.BadParameter(
                f"{html_file} says category {header['category']!r}; save it as "
                f"{header['category']}/…, or change its header",
                param_hint="NAME",
            )
        subject = subject or header["subject"]
        params = header.get("params", "") if params is None else params
        body = source[found.end() :]
        stripped = body.lstrip("\n")
        offset = source.count("\n", 0, found.end()) + len(body) - len(stripped)
        source = stripped
    try:
        saved = template_store.save_version(
            runtime(),
            current_actor(as_username),
            name=name,
            subject=subject,
            html=source,
            text=text_file.read_text(encoding="utf-8") if text_file else None,
            params=params or "",
            note=note,
            base_version=base_version,
        )
    except TemplateError as exc:
        _report_problems(exc, html_file, text_file, offset)
        raise
    if as_json:
        echo_json(saved.as_dict())
    else:
        click.echo(f"saved {saved.template} version {saved.number} ({saved.content_hash[:12]})")


def _report_problems(
    exc: TemplateError, html_file: Path, text_file: Path | None, offset: int
) -> None:
    """Each problem at its place in the files given (the HTML's lines after its header)."""
    files = {"html": str(html_file), "text": str(text_file or "")}
    for problem in template_store.error_fields(exc):
        field = str(problem["field"])
        where = files.get(field) or field
        if "line" in problem:
            line = int(str(problem["line"])) + (offset if field == "html" else 0)
            where += f", line {line}"
        if "column" in problem:
            where += f", column {problem['column']}"
        click.secho(f"{where}: {problem['message']}", fg="red", err=True)


COMMANDS = [template_group]
