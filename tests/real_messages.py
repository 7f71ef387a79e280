"""Real built messages for tests that need what a recipient actually gets (tokens, headers)."""

from __future__ import annotations

import re
from dataclasses import replace
from email import message_from_bytes, policy
from typing import Any

from mailer.config import Settings
from mailer.enums import Category
from mailer.messages import CampaignInfo, CampaignMessages, SenderIdentity, load_template
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.outgoing import OutgoingMessage


def build_promotion(
    settings: Settings, contact: Any, *, send_id: int, campaign_id: int = 5, **changes: Any
) -> OutgoingMessage:
    """The open-enrollment promotion as built for `contact` in send `send_id` (`changes` go
    to the sample recipient, e.g. first_name="José")."""
    return build_with(promotion(settings, campaign_id), contact, send_id=send_id, **changes)


def promotion(settings: Settings, campaign_id: int = 5) -> CampaignMessages:
    """The open-enrollment promotion's campaign, compiled once for many `build_with` calls."""
    return CampaignMessages(
        settings,
        template=load_template(settings, "promotions/open-enrollment"),
        campaign=CampaignInfo(id=campaign_id, name="Open enrollment", category=Category.PROMOTIONS),
        sender=SenderIdentity(name="CPI Marketing", email="news@cpi.example"),
    )


def build_with(
    messages: CampaignMessages, contact: Any, *, send_id: int, **changes: Any
) -> OutgoingMessage:
    """`messages`' message for `contact` in send `send_id` (see `build_promotion`)."""
    recipient = replace(
        SAMPLE_RECIPIENT, send_id=send_id, contact_id=contact.id, email=contact.email, **changes
    )
    return messages.build(recipient)


def unsubscribe_url(message: OutgoingMessage, *, scheme: str = "https") -> str:
    """The web URI of the message's List-Unsubscribe header (RFC 8058 wants https; the
    browser test serves plain http on 127.0.0.1)."""
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [url] = re.findall(rf"<({scheme}://[^>]+)>", str(parsed["List-Unsubscribe"]))
    return url
