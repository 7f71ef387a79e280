"""`preview_message`: what a campaign with a template would send one contact, built by the
same code as a real send (recipient, sender, parameters, builder), with no send log row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailer.access import Actor, audit
from mailer.contacts.lookup import get_visible_contact
from mailer.delivery.identities import recipient_for, sender_for
from mailer.enums import Category
from mailer.messages import CampaignInfo, CampaignMessages, Recipient, check_params, load_template
from mailer.messages.check import SAMPLE_POLICY_PARAMS, sample_params
from mailer.outgoing import OutgoingMessage
from mailer.runtime import Runtime


@dataclass(frozen=True)
class MessagePreview:
    """One built message and its rendered parts."""

    recipient: Recipient
    message: OutgoingMessage
    subject: str
    text: str
    html: str
    #: The campaign parameters it was built with (given, or stand-ins like `[date]`).
    params: dict[str, object]


def preview_message(
    rt: Runtime,
    template_name: str,
    email: str,
    *,
    actor: Actor,
    params: Mapping[str, object] | None = None,
) -> MessagePreview:
    """Build `template_name` for the contact `email` as a campaign would, audited.

    An account manager may preview only with contacts of their own clients (a refusal is
    audited). Service mail is sent as the contact's own account manager; a policy notice
    announces the latest published version (with its changes and link); declared parameters
    not given show as `[name]`, and an undeclared one is refused with the nearest declared name.
    """
    settings = rt.settings
    template = load_template(settings, template_name)
    with rt.sessions.begin() as session:
        recipient, manager_username = recipient_for(session, email)
        get_visible_contact(session, actor, recipient.contact_id, action="template.preview")
        if template.category is Category.POLICY:
            used: dict[str, object] = _latest_notice_params(rt, session)
        else:
            check_params(template, {**sample_params(template), **(params or {})})
            used = {**sample_params(template), **(params or {})}
        sender = sender_for(
            session,
            settings,
            template.category,
            manager_username if template.category is Category.SERVICE else "",
        )
        audit(
            session,
            actor,
            "template.preview",
            object_type="template",
            object_id=template_name,
            contact_id=recipient.contact_id,
        )
    messages = CampaignMessages(
        settings.with_(dkim_private_key_path=""),
        template=template,
        campaign=CampaignInfo(id=0, name=f"preview {template_name}", category=template.category),
        sender=sender,
        params=dict(used),
    )
    subject, text, html = messages.render_parts(recipient)
    return MessagePreview(recipient, messages.build(recipient), subject, text, html, used)


def _latest_notice_params(rt: Runtime, session: Session) -> dict[str, object]:
    # imported here: mailer.policy builds on mailer.delivery, which must load first
    from mailer.policy.publish import notice_params
    from mailer.policy.text import all_versions

    newest = next(iter(all_versions(session)), None)
    return notice_params(rt.settings, newest) if newest else dict(SAMPLE_POLICY_PARAMS)
