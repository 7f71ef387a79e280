"""The dashboard, and the record screens: contacts, policy, audit log, users and tokens."""

from __future__ import annotations

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

    def run() -> tuple[list[reports.CampaignRow], dict[str, list[reports.Activity]]]:
        with context(request).runtime.sessions() as session:
            running = reports.running_campaigns(session, actor(request))
            for row in running:
                session.expunge(row.campaign)
            return running, reports.recent_activity(session, actor(request))

    running, activity = await run_in_threadpool(run)
    return render(request, "dashboard.html", running=running, activity=activity)
