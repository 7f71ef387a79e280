"""`template preview` builds what a campaign sends: same recipient, sender, parameters and
builder as delivery (mailer/previews.py and mailer/delivery/identities.py)."""

from __future__ import annotations

import datetime as dt
import email
import re
from email import policy

from mailer import campaigns
from mailer.policy import publish_policy
from mailer.previews import preview_message
from tests.delivery_fixtures import as_user

#: Per-send parts (tokens in links, Message-ID) that differ between any two messages.
_PER_SEND = re.compile(r"/(u|preferences)/[A-Za-z0-9_.-]+")


def _text(raw: bytes) -> tuple[email.message.EmailMessage, str]:
    message = email.message_from_bytes(raw, policy=policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    return message, _PER_SEND.sub(r"/\1/TOKEN", body.get_content())  # type: ignore[return-value]


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def test_a_service_preview_is_the_message_the_campaign_sends(
    mail_rt, workers, people, make_audience, smtp_server
) -> None:
    # Given a client of Amy's who received Amy's service notice
    [contact] = make_audience(1, account_manager_id=people["manager"].id)
    cid = campaigns.create_campaign(
        mail_rt,
        actor=as_user(mail_rt, "amy"),
        name="Maintenance",
        category="service",
        template="service/planned-maintenance",
        rule_text="kind = client",
    ).id
    campaigns.launch_campaign(
        mail_rt, cid, actor=as_user(mail_rt, "amy"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([cid], timeout_s=60)
    sent, sent_text = _text(smtp_server.messages[0].data)
    # When the template is previewed for that contact
    preview = preview_message(
        mail_rt,
        as_user(mail_rt, "amy"),
        template="service/planned-maintenance",
        contact=contact.email,
    )
    shown = dict(preview.headers)
    # Then sender, reply address, subject and text are what was sent
    for header in ("From", "Reply-To", "Subject", "To", "List-Unsubscribe-Post"):
        assert shown[header] == str(sent[header]), header
    assert "amy@cpi.example" in shown["Reply-To"]
    assert _lines(_PER_SEND.sub(r"/\1/TOKEN", preview.text)) == _lines(sent_text)


def test_a_policy_preview_announces_the_latest_version_with_its_changes_and_link(
    rt, people, make_contact
) -> None:
    # Given a published material change with two listed changes
    contact = make_contact()
    publish_policy(
        rt,
        version="2",
        effective_on=dt.date(2099, 1, 1),
        text="The whole new policy.",
        summary="What changed.\n- Logs are kept for seven years.\n- Cookies last a session.",
        is_material=True,
        actor=as_user(rt, "ada"),
        dispatch=None,
    )
    # When the notice template is previewed
    preview = preview_message(
        rt, as_user(rt, "ada"), template="policy/privacy-policy-change", contact=contact.email
    )
    # Then the changes and the version's own page are in it, as in the real notice
    assert "Logs are kept for seven years." in preview.text
    assert "Cookies last a session." in preview.text
    assert f"{rt.settings.public_base_url}/privacy/2" in preview.text


def test_an_account_manager_cannot_preview_with_another_managers_client(
    rt, people, make_org, make_contact
) -> None:
    import pytest

    from mailer.errors import PermissionDeniedError

    theirs = make_contact(organization=make_org(account_manager_id=people["other_manager"].id))
    with pytest.raises(PermissionDeniedError, match="client you do not manage"):
        preview_message(
            rt, as_user(rt, "amy"), template="service/planned-maintenance", contact=theirs.email
        )
