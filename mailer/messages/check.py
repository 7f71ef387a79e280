"""`check_template`: load a template and build a sample message, so problems show before a send."""

from __future__ import annotations

from mailer.config import Settings
from mailer.errors import TemplateError
from mailer.messages.builder import CampaignMessages
from mailer.messages.context import SAMPLE_RECIPIENT, CampaignInfo, SenderIdentity
from mailer.messages.templates import (
    Template,
    TemplateSource,
    compile_template,
    load_template,
)

#: Campaign params a policy notice is checked with.
SAMPLE_POLICY_PARAMS = {
    "version": "2",
    "effective_date": "January 1, 2027",
    "summary": "We now describe how long we keep service activity logs.",
    "changes": ["Service activity logs are kept for seven years."],
}


def sample_params(template: Template) -> dict[str, str]:
    """A stand-in value for each campaign parameter the template declares: `[deadline]`."""
    return {name: f"[{name}]" for name in template.params}


def check_template(settings: Settings, name: str, *, subject: str = "") -> Template:
    """Load `name` and render it for a sample contact; TemplateError names what is wrong."""
    return check_rendering(settings, load_template(settings, name, subject=subject))


def check_source_template(
    settings: Settings, source: TemplateSource, *, subject: str = ""
) -> Template:
    """The same check for a template kept anywhere (a stored version): compile, render."""
    return check_rendering(settings, compile_template(settings, source, subject=subject))


def check_rendering(settings: Settings, template: Template) -> Template:
    """Render a compiled template for a sample contact; the footer must show what the law
    and the policy require (postal address, unsubscribe or policy link)."""
    name = template.name
    messages = CampaignMessages(
        settings.with_(dkim_private_key_path=""),
        template=template,
        campaign=CampaignInfo(id=0, name=f"check {name}", category=template.category),
        sender=SenderIdentity("Dana Reyes", f"dana.reyes@{settings.mail_domain}", "541-555-0142"),
        params={**SAMPLE_POLICY_PARAMS, **sample_params(template)},
    )
    _, text, html = messages.render_parts(SAMPLE_RECIPIENT)
    required = [("postal address", settings.postal_address)]
    if template.category.allows_opt_out:
        required.append(("unsubscribe link", f"{settings.public_base_url.rstrip('/')}/u/"))
    else:
        required.append(("policy link", f"{settings.public_base_url.rstrip('/')}/privacy"))
    for label, needle in required:
        for part, body in (("text", text), ("HTML", html)):
            if needle not in body:
                raise TemplateError(
                    template.name, f"the {part} part does not show the {label} ({needle!r})"
                )
    return template
