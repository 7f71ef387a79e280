"""Who may do what to a campaign: the role decides the categories, ownership the campaign.

Refusals go through `mailer.access.require`, so they are audited as `denied` like everywhere.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from mailer.access import Actor, require
from mailer.access.permissions import ALLOWED_CATEGORIES, roles_allowed
from mailer.enums import Category
from mailer.models import Campaign

#: The verbs checked here; each is checked and audited as the action `campaign.<verb>`.
VERBS = ("create", "edit", "launch", "pause", "resume", "cancel")


def require_campaign_right(
    session: Session,
    actor: Actor,
    verb: str,
    *,
    category: Category,
    campaign: Campaign | None = None,
) -> None:
    """Raise PermissionDeniedError (audited) unless `actor` may `verb` this campaign.

    The actor's role must allow the category; an existing campaign may be changed only by
    whoever created it or an admin.
    """
    assert verb in VERBS, verb
    reason = ""
    if category not in ALLOWED_CATEGORIES[actor.role]:
        needed = " or ".join(roles_allowed(category))
        reason = f"{category} campaigns need the role {needed}"
    elif campaign is not None and not actor.is_admin and actor.username != campaign.created_by:
        reason = (
            f"campaign {campaign.id} belongs to {campaign.created_by!r}; only they or an admin "
            f"may {verb} it"
        )
    require(
        session,
        actor,
        f"campaign.{verb}",
        object_type="campaign",
        object_id=campaign.id if campaign is not None else None,
        allowed=not reason,
        reason=reason,
    )
