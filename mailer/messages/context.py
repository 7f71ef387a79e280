"""The allowlisted template context: the only names and fields a template can see.

Each view is a small dataclass; the static check (`templates.py`) reads their fields, so a
typo such as `contact.frist_name` fails when the template is loaded, not mid-campaign.

The recipient and the views made for each message are not frozen: a frozen dataclass sets each
field through `object.__setattr__`, ~5× the cost of a plain one, and a message makes five of
them. Nothing writes to them: they live for one message, and a template cannot assign an
attribute (Jinja allows that on a `namespace()` only, and the sandbox hides `__setattr__`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from mailer.enums import Category


@dataclass(slots=True)
class Recipient:
    """One recipient of one send, as the delivery engine reads it from the send log."""

    send_id: int
    contact_id: int
    email: str
    first_name: str = ""
    last_name: str = ""
    title: str = ""
    needs_smtputf8: bool = False
    org_name: str = ""
    org_industry: str = ""
    org_employees: int | None = None
    org_city: str = ""
    org_state: str = ""
    org_kind: str = ""
    manager_name: str = ""
    manager_email: str = ""
    manager_phone: str = ""


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    """What a message needs to know about its campaign."""

    id: int
    name: str
    category: Category


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    """The person or team a campaign is sent as (service mail: the account manager)."""

    name: str
    email: str
    phone: str = ""
    reply_to: str | None = None


@dataclass(slots=True)
class ContactView:
    first_name: str
    last_name: str
    full_name: str
    email: str
    title: str


@dataclass(slots=True)
class OrganizationView:
    name: str
    industry: str
    employees: int | None
    city: str
    state: str
    kind: str


@dataclass(slots=True)
class ManagerView:
    name: str
    email: str
    phone: str


@dataclass(frozen=True, slots=True)
class CampaignView:
    id: int
    name: str
    category: str


@dataclass(frozen=True, slots=True)
class SenderView:
    name: str
    email: str
    phone: str


@dataclass(frozen=True, slots=True)
class CompanyView:
    name: str
    postal_address: str
    website: str


@dataclass(slots=True)
class LinksView:
    """Per-recipient links; empty strings where the category has none."""

    unsubscribe: str
    preferences: str
    policy: str


@dataclass(frozen=True, slots=True)
class PolicyView:
    """The policy version a `policy` notice announces (from the campaign's params)."""

    version: str = ""
    effective_date: str = ""
    summary: str = ""
    changes: tuple[str, ...] = field(default_factory=tuple)
    url: str = ""


#: Every name a template may use, and the view class whose fields it may read.
CONTEXT_VIEWS: dict[str, type] = {
    "contact": ContactView,
    "organization": OrganizationView,
    "manager": ManagerView,
    "campaign": CampaignView,
    "sender": SenderView,
    "company": CompanyView,
    "links": LinksView,
    "policy": PolicyView,
}


#: The views that differ from one recipient to the next (the rest are the campaign's).
RECIPIENT_VIEWS = ("contact", "organization", "manager", "links")


def view_fields(name: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(CONTEXT_VIEWS[name]))


def recipient_views(r: Recipient) -> tuple[ContactView, OrganizationView, ManagerView]:
    """The per-recipient part of the context (links are added by the builder)."""
    full = f"{r.first_name} {r.last_name}".strip()
    return (
        ContactView(r.first_name, r.last_name, full, r.email, r.title),
        OrganizationView(
            r.org_name, r.org_industry, r.org_employees, r.org_city, r.org_state, r.org_kind
        ),
        ManagerView(r.manager_name, r.manager_email, r.manager_phone),
    )


def policy_view(params: dict[str, Any], public_base_url: str) -> PolicyView:
    """Read a notice's policy fields from campaign params; the URL defaults to /privacy[/v]."""
    version = str(params.get("version", "") or "")
    effective = params.get("effective_date", params.get("effective_on", "")) or ""
    changes = params.get("changes") or ()
    if isinstance(changes, str):
        changes = [line.strip("-• ").strip() for line in changes.splitlines() if line.strip()]
    base = public_base_url.rstrip("/")
    url = str(params.get("url") or params.get("policy_url") or "")
    if not url:
        url = f"{base}/privacy/{version}" if version else f"{base}/privacy"
    return PolicyView(
        version=version,
        effective_date=str(effective),
        summary=str(params.get("summary", "") or ""),
        changes=tuple(str(c) for c in changes),
        url=url,
    )


#: A recipient used to check and preview templates without a database.
SAMPLE_RECIPIENT = Recipient(
    send_id=0,
    contact_id=0,
    email="pat.example@client.example",
    first_name="Pat",
    last_name="Example",
    title="HR Director",
    org_name="Example Health Partners",
    org_industry="healthcare",
    org_employees=240,
    org_city="Bend",
    org_state="OR",
    org_kind="client",
    manager_name="Dana Reyes",
    manager_email="dana.reyes@cpi.example",
    manager_phone="541-555-0142",
)
