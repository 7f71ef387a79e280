"""Templates and messages: everything mailer sends is rendered and assembled here."""

from __future__ import annotations

from mailer.messages.builder import CampaignMessages
from mailer.messages.check import check_template
from mailer.messages.context import CampaignInfo, Recipient, SenderIdentity
from mailer.messages.templates import Template, check_params, list_templates, load_template

__all__ = [
    "CampaignInfo",
    "CampaignMessages",
    "Recipient",
    "SenderIdentity",
    "Template",
    "check_params",
    "check_template",
    "list_templates",
    "load_template",
]
