"""Who may send what: a user's role decides the categories they may launch."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.enums import Category, Role
from mailer.errors import NotFoundError, PermissionDeniedError
from mailer.models import User

#: Categories each role may create and launch campaigns in.
ALLOWED_CATEGORIES: dict[Role, frozenset[Category]] = {
    Role.ADMIN: frozenset(Category),
    Role.MARKETING: frozenset({Category.FEATURES, Category.PROMOTIONS}),
    Role.ACCOUNT_MANAGER: frozenset({Category.SERVICE}),
}


def find_user(session: Session, username: str) -> User:
    if not username:
        raise PermissionDeniedError(
            "this command acts as a mailer user: pass --as USERNAME or set MAILER_USER "
            "(create users with `mailer users create`)"
        )
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        raise NotFoundError(
            f"no user named {username!r}; create it with `mailer users create {username} --role …`"
        )
    return user


def roles_allowed(category: Category) -> list[str]:
    return sorted(role.value for role, cats in ALLOWED_CATEGORIES.items() if category in cats)


def require_category(user: User, category: Category) -> None:
    """Raise PermissionDeniedError unless `user`'s role may send `category` mail."""
    if category not in ALLOWED_CATEGORIES[Role(user.role)]:
        needed = " or ".join(roles_allowed(category))
        raise PermissionDeniedError(
            f"user {user.username!r} has role {user.role}; {category} campaigns need the role "
            f"{needed}"
        )


def require_owner_or_admin(user: User, created_by: str) -> None:
    """Only the campaign's creator or an admin may change it."""
    if user.role != Role.ADMIN and user.username != created_by:
        raise PermissionDeniedError(
            f"campaign belongs to {created_by!r}; only they or an admin may change it"
        )


def require_admin(user: User, action: str) -> None:
    """Raise PermissionDeniedError unless `user` is an admin; `action` names what was refused."""
    if user.role != Role.ADMIN:
        raise PermissionDeniedError(
            f"user {user.username!r} has role {user.role}; only an admin may {action}"
        )
