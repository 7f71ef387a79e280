"""Who may send what: a user's role decides the categories they may launch (checked, with
ownership, by `mailer.campaigns.rights`); an account manager sees only their own campaigns."""

from __future__ import annotations

from mailer.access.actor import Actor
from mailer.enums import Category, Role
from mailer.models import Campaign

#: Categories each role may create and launch campaigns in.
ALLOWED_CATEGORIES: dict[Role, frozenset[Category]] = {
    Role.ADMIN: frozenset(Category),
    Role.MARKETING: frozenset({Category.FEATURES, Category.PROMOTIONS}),
    Role.ACCOUNT_MANAGER: frozenset({Category.SERVICE}),
}


def roles_allowed(category: Category) -> list[str]:
    return sorted(role.value for role, cats in ALLOWED_CATEGORIES.items() if category in cats)


def may_see_campaign(actor: Actor, campaign: Campaign) -> bool:
    """An account manager sees only the campaigns they created (their clients' mail)."""
    if actor.role is Role.ACCOUNT_MANAGER:
        return campaign.created_by == actor.username
    return True
