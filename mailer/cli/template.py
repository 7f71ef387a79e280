"""`mailer template list|check|preview`."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select

from mailer.audit import record
from mailer.cli._common import actor, echo_json, runtime
from mailer.config import Settings
from mailer.enums import Category
from mailer.errors import NotFoundError, TemplateError
from mailer.messages import (
    CampaignInfo,
    CampaignMessages,
    Recipient,
    SenderIdentity,
    check_template,
    list_templates,
    load_template,
)
from mailer.messages.check import SAMPLE_POLICY_PARAMS
from mailer.messages.headers import parse_mailbox
from mailer.models import Contact, Organization, PolicyVersion, User


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
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path))
def preview_command(name: str, email: str, html_file: Path | None) -> None:
    """Render NAME for a real contact: headers and text here, the HTML to --html FILE."""
    rt = runtime()
    settings = rt.settings
    template = load_template(settings, name)
    with rt.sessions.begin() as session:
        recipient, manager = _recipient(session, email)
        params = _policy_params(session) if template.category is Category.POLICY else {}
        record(
            session,
            actor(settings),
            "template.preview",
            object_type="template",
            object_id=name,
            contact_id=recipient.contact_id,
        )
    sender = _sender(settings, template.category, manager)
    messages = CampaignMessages(
        settings.with_(dkim_private_key_path=""),
        template=template,
        campaign=CampaignInfo(id=0, name=f"preview {name}", category=template.category),
        sender=sender,
        params=params,
    )
    out = messages.build(recipient)
    _, text, html = messages.render_parts(recipient)
    parsed = message_from_bytes(out.data, policy=default_policy)
    for key, value in parsed.items():
        click.echo(f"{key}: {value}")
    click.echo("")
    click.echo(text)
    if html_file:
        html_file.write_text(html, encoding="utf-8")
        click.echo(f"(HTML written to {html_file})", err=True)


def _recipient(session: Any, email: str) -> tuple[Recipient, User | None]:
    row = session.execute(
        select(Contact, Organization)
        .join(Organization, Contact.organization_id == Organization.id)
        .where(Contact.email == email.strip())
    ).first()
    if row is None:
        raise NotFoundError(f"no contact with email {email!r}; check the address or import it")
    contact, org = row
    manager = session.get(User, org.account_manager_id) if org.account_manager_id else None
    recipient = Recipient(
        send_id=0,
        contact_id=contact.id,
        email=contact.email,
        first_name=contact.first_name,
        last_name=contact.last_name,
        title=contact.title,
        needs_smtputf8=contact.needs_smtputf8,
        org_name=org.name,
        org_industry=org.industry,
        org_employees=org.benefit_eligible_employees,
        org_city=org.city,
        org_state=org.state,
        org_kind=org.kind,
        manager_name=manager.display_name if manager else "",
        manager_email=manager.email if manager else "",
        manager_phone=manager.phone if manager else "",
    )
    return recipient, manager


def _policy_params(session: Any) -> dict[str, Any]:
    latest = session.scalars(
        select(PolicyVersion).order_by(PolicyVersion.published_at.desc()).limit(1)
    ).first()
    if latest is None:
        return dict(SAMPLE_POLICY_PARAMS)
    return {
        "version": latest.version,
        "effective_date": latest.effective_on.strftime("%B %-d, %Y"),
        "summary": latest.summary,
    }


def _sender(settings: Settings, category: Category, manager: User | None) -> SenderIdentity:
    if category is Category.SERVICE and manager is not None:
        return SenderIdentity(manager.display_name, manager.email, manager.phone)
    source = settings.company_from if category is Category.POLICY else settings.marketing_from
    display, address = parse_mailbox(source)
    return SenderIdentity(display, address)


COMMANDS = [template_group]
