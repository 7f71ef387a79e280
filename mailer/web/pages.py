"""The public pages' Jinja2 environment and the words shown for each category."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from mailer.config import Settings
from mailer.enums import ALL_MARKETING, Category
from mailer.errors import ConfigError

#: What each opt-out scope is called on the pages, and one line on what it covers.
SCOPE_LABELS: dict[str, tuple[str, str]] = {
    ALL_MARKETING: (
        "Marketing email",
        "Untick to stop all marketing from CPI: feature explanations, promotions and any "
        "kind we add later.",
    ),
    Category.FEATURES: (
        "Feature explanations",
        "How to get more out of the features of our service.",
    ),
    Category.PROMOTIONS: ("Promotions", "Offers and news about CPI services."),
    Category.SERVICE: (
        "Service notices",
        "Outages, status, billing and account changes, usually from your account manager.",
    ),
    Category.POLICY: (
        "Privacy-policy notices",
        "We must tell every client by email when our privacy policy changes how we use or "
        "share information, so these notices cannot be turned off.",
    ),
}


def make_environment(settings: Settings) -> Environment:
    """The Jinja2 environment over `templates/web/`, autoescaped, compiled once per app."""
    folder = Path(settings.templates_dir) / "web"
    if not (folder / "base.html").is_file():
        raise ConfigError(
            f"{folder / 'base.html'} not found: MAILER_TEMPLATES_DIR must point at the "
            "project's templates/ folder"
        )
    env = Environment(
        loader=FileSystemLoader(folder),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        company_name=settings.company_name,
        postal_address=settings.postal_address,
        scope_labels=SCOPE_LABELS,
    )
    return env


def render(env: Environment, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(**context), status_code=status_code)


def mask_address(email: str) -> str:
    """`pat.smith@client.example` → `p••••@client.example`: enough to recognize, not to harvest."""
    local, _, domain = email.rpartition("@")
    if not local:
        return "your address"
    return f"{local[0]}••••@{domain}"
