"""API: contacts, policy versions and coverage, users and tokens, audit events."""

from __future__ import annotations

from starlette.routing import BaseRoute

ROUTES: list[BaseRoute] = []
