"""Who may see and who may change stored templates, by category.

- see (list, open, preview): the roles that may send the category (`ALLOWED_CATEGORIES`):
  admins every template, marketing features and promotions, account managers service;
- change (save a version, which also creates the template): admins any category, marketing
  features and promotions. Account managers use service templates but do not edit them: one
  service template is shared by every manager's notices, so an edit would change what other
  managers' clients get. Policy notices are the admins' alone, like publishing the policy.

Refusals go through `mailer.access.require`, so they are audited as `denied`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from mailer.access import Actor, require
from mailer.access.permissions import ALLOWED_CATEGORIES
from mailer.enums import Category, Role

#: Categories whose stored templates each role may save versions of.
EDITABLE_CATEGORIES: dict[Role, frozenset[Category]] = {
    Role.ADMIN: frozenset(Category),
    Role.MARKETING: frozenset({Category.FEATURES, Category.PROMOTIONS}),
    Role.ACCOUNT_MANAGER: frozenset(),
}


def may_see(actor: Actor, category: Category) -> bool:
    return category in ALLOWED_CATEGORIES[actor.role]


def may_edit(actor: Actor, category: Category) -> bool:
    return category in EDITABLE_CATEGORIES[actor.role]


def require_template_right(
    session: Session, actor: Actor, verb: str, category: Category, name: str
) -> None:
    """Raise PermissionDeniedError (audited as `template.<verb>`) unless the actor may."""
    allowed = may_edit(actor, category) if verb == "edit" else may_see(actor, category)
    editors = sorted(r.value for r, cats in EDITABLE_CATEGORIES.items() if category in cats)
    readers = sorted(r.value for r, cats in ALLOWED_CATEGORIES.items() if category in cats)
    needed = " or ".join(editors if verb == "edit" else readers)
    require(
        session,
        actor,
        f"template.{verb}",
        object_type="template",
        object_id=name,
        allowed=allowed,
        reason="" if allowed else f"{verb} {category} templates needs the role {needed}",
    )
