"""Who may send what: a user's role decides the categories they may launch; only a campaign's
creator or an admin changes it. Each check audits its refusal (see `require`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from mailer.access.actor import Actor, require
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


def may_send(actor: Actor, category: Category | str) -> bool:
    return Category(category) in ALLOWED_CATEGORIES[actor.role]


def require_category(
    session: Session,
    actor: Actor,
    category: Category | str,
    *,
    action: str = "campaign.create",
    object_id: str | int | None = None,
) -> None:
    """Refuse (audited) unless the actor's role may send `category` mail."""
    category = Category(category)
    require(
        session,
        actor,
        action,
        object_type="campaign",
        object_id=object_id,
        allowed=may_send(actor, category),
        reason=(
            f"{category} campaigns need the role {' or '.join(roles_allowed(category))}, "
            f"not {actor.role.value}"
        ),
    )


def require_owner_or_admin(session: Session, actor: Actor, campaign: Campaign, action: str) -> None:
    """Only the campaign's creator or an admin may change it."""
    require(
        session,
        actor,
        action,
        object_type="campaign",
        object_id=campaign.id,
        allowed=actor.is_admin or actor.username == campaign.created_by,
        reason=(
            f"campaign {campaign.id} belongs to {campaign.created_by!r}; only they or an admin "
            "may change it"
        ),
    )


def may_see_campaign(actor: Actor, campaign: Campaign) -> bool:
    """An account manager sees only the campaigns they created (their clients' mail)."""
    if actor.role is Role.ACCOUNT_MANAGER:
        return campaign.created_by == actor.username
    return True
