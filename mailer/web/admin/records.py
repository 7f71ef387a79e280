"""The dashboard, and the record screens: contacts, policy, audit log, users and tokens."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mailer import reports
from mailer.enums import Role
from mailer.web.admin.pages import render
from mailer.web.context import actor, context
from mailer.web.guard import allow


@allow(Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
async def dashboard(request: Request) -> Response:
    """Running campaigns with live progress; recent opt-outs, bounces and complaints."""

    def run() -> tuple[Any, Any, Any]:
        with context(request).runtime.sessions() as session:
            who = actor(request)
            running = reports.running_campaigns(session, who)
            recent = reports.list_campaign_rows(session, who, limit=5)
            activity = reports.recent_activity(session, who)
            session.expunge_all()
            return running, recent, activity

    running, recent, activity = await run_in_threadpool(run)
    return render(request, "dashboard.html", running=running, recent=recent, activity=activity)
