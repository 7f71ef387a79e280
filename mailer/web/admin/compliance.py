"""Admin screens: policy versions (publish, coverage with CSV, resend) and the audit log with
filters and export."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer import audit, policy, reports, template_store
from mailer.enums import Role
from mailer.errors import PolicyError
from mailer.models import parse_id
from mailer.web.admin.pages import DEFAULT_ZONE, checked_form, done, field, render
from mailer.web.context import actor, context
from mailer.web.guard import allow

COVERAGE_COLUMNS = [
    "external_id",
    "name",
    "account_manager",
    "is_reached",
    "sent",
    "pending",
    "undeliverable",
    "failed",
    "skipped",
    "reason",
]
#: Every coverage row names what the notice was made from (its launch snapshot).
NOTICE_COLUMNS = ["notice_template", "notice_template_version", "notice_content_hash"]
AUDIT_COLUMNS = ["id", "at", "actor", "ip", "action", "object_type", "object_id", "details"]


def _versions(request: Request) -> list[Any]:
    with context(request).runtime.sessions.begin() as session:
        policy.ensure_first_version(session)
        versions = policy.all_versions(session)
        session.expunge_all()
        return list(reversed(versions))


@allow(Role.ADMIN)
async def policy_page(request: Request) -> Response:
    """Policy versions, newest first, and the form to publish the next one."""
    versions = await run_in_threadpool(_versions, request)
    return render(request, "policy.html", versions=versions, values={}, errors={})


def _day(text: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


@allow(Role.ADMIN)
async def publish(request: Request) -> Response:
    """Publish a version; a material one launches the notice to every client at once."""
    form = await checked_form(request)
    values = {
        "version": field(form, "version"),
        "effective_on": field(form, "effective_on"),
        "summary": str(form.get("summary", "")).strip(),
        "text": str(form.get("text", "")).strip(),
        "is_material": form.get("is_material") == "yes",
    }
    errors: dict[str, str] = {}
    effective_on = _day(str(values["effective_on"]))
    if effective_on is None:
        errors["effective_on"] = "Give the date it takes effect, like 2027-01-01."
    for name in ("version", "summary", "text"):
        if not values[name]:
            errors[name] = "Required."
    if form.get("confirm") != "yes":
        errors["confirm"] = "Tick the box to confirm."
    ctx = context(request)
    if not errors:
        assert effective_on is not None
        try:
            report = await run_in_threadpool(
                lambda: policy.publish_policy(
                    ctx.runtime,
                    version=str(values["version"]),
                    effective_on=effective_on,
                    text=str(values["text"]),
                    summary=str(values["summary"]),
                    is_material=bool(values["is_material"]),
                    actor=actor(request),
                    dispatch=ctx.dispatch,
                )
            )
        except PolicyError as exc:
            errors["version"] = str(exc)
        else:
            return done(request, f"/admin/policy/{report.version}/coverage?notice=published")
    versions = await run_in_threadpool(_versions, request)
    return render(
        request, "policy.html", status_code=422, versions=versions, values=values, errors=errors
    )


def _coverage(request: Request) -> tuple[Any, dict[str, Any] | None]:
    version = request.path_params["version"]
    rt = context(request).runtime
    report = policy.coverage(rt, version, actor=actor(request))
    with rt.sessions() as session:
        # what the notice said: the launch snapshot of its campaign
        return report, template_store.snapshot_of(session, report.campaign_id)


@allow(Role.ADMIN)
async def coverage(request: Request) -> Response:
    """Which clients the notice of a version reached, and why the others were not."""
    report, snapshot = await run_in_threadpool(_coverage, request)
    return render(
        request,
        "coverage.html",
        report=report,
        snapshot=snapshot,
        snapshot_campaign_id=report.campaign_id,
    )


@allow(Role.ADMIN)
async def coverage_csv(request: Request) -> Response:
    """Coverage of a version, one row per client, as CSV, naming the notice's template."""
    report, snapshot = await run_in_threadpool(_coverage, request)
    notice = [
        (snapshot or {}).get(k) or ""
        for k in ("template", "template_version_label", "content_hash")
    ]
    rows = [[*(c.as_dict()[k] for k in COVERAGE_COLUMNS), *notice] for c in report.clients]
    return Response(
        reports.csv_text([*COVERAGE_COLUMNS, *NOTICE_COLUMNS], rows),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="policy-{report.version}-coverage.csv"'
        },
    )


@allow(Role.ADMIN)
async def resend(request: Request) -> Response:
    """Queue the notice for every eligible contact not yet sent it (never a second copy)."""
    await checked_form(request)
    version = request.path_params["version"]
    ctx = context(request)
    await run_in_threadpool(
        lambda: policy.resend_notice(
            ctx.runtime, version, actor=actor(request), dispatch=ctx.dispatch
        )
    )
    return done(request, f"/admin/policy/{version}/coverage?notice=resent")


#: Audit events on one page of the screen; the CSV export takes at most AUDIT_CSV_MAX.
AUDIT_PAGE = 100
AUDIT_CSV_MAX = 100_000


def _audit_filter(request: Request) -> tuple[audit.AuditQuery, dict[str, str]]:
    q = request.query_params
    shown = {k: q.get(k, "").strip()[:100] for k in ("actor", "action", "object", "since", "until")}
    zone = ZoneInfo(DEFAULT_ZONE)
    object_type, _, object_id = shown["object"].partition(":")
    since = _day(shown["since"])
    until = _day(shown["until"])
    return (
        audit.AuditQuery(
            actor=shown["actor"],
            action=shown["action"],
            object_type=object_type.strip(),
            object_id=object_id.strip(),
            since=dt.datetime.combine(since, dt.time(), zone) if since else None,
            until=dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), zone)
            if until and until < dt.date.max  # the calendar's last day: nothing comes after
            else None,
        ),
        shown,
    )


@allow(Role.ADMIN)
async def audit_log(request: Request) -> Response:
    """The audit log, newest first, filtered by actor, action, object and date."""
    where, shown = _audit_filter(request)
    before = request.query_params.get("before", "")

    before_id = parse_id(before)

    def run() -> audit.AuditPage:
        with context(request).runtime.sessions() as session:
            page = audit.query_events(
                session,
                actor(request),
                where,
                limit=AUDIT_PAGE,
                cursor=audit.cursor_before(before_id) if before_id is not None else None,
            )
            session.expunge_all()
            return page

    page = await run_in_threadpool(run)
    return render(
        request,
        "audit.html",
        events=page.items,
        f=shown,
        next_before=page.items[-1].id if page.next_cursor else None,
    )


@allow(Role.ADMIN)
async def audit_csv(request: Request) -> Response:
    """The filtered audit log as CSV (at most 100,000 events)."""
    where, _ = _audit_filter(request)

    def run() -> str:
        with context(request).runtime.sessions.begin() as session:
            who = actor(request)
            events: list[Any] = []
            cursor: str | None = None
            while len(events) < AUDIT_CSV_MAX:
                page = audit.query_events(
                    session,
                    who,
                    where,
                    limit=min(audit.MAX_PAGE, AUDIT_CSV_MAX - len(events)),
                    cursor=cursor,
                )
                events += page.items
                cursor = page.next_cursor
                if cursor is None:
                    break
            audit.record(
                session,
                who.username,
                "audit.export",
                object_type="audit",
                events=len(events),
                filter={k: str(v) for k, v in vars(where).items() if v},
            )
            rows = [
                [
                    e.id,
                    e.at.isoformat(),
                    e.actor,
                    e.ip,
                    e.action,
                    e.object_type,
                    e.object_id,
                    e.details,
                ]
                for e in events
            ]
        return reports.csv_text(AUDIT_COLUMNS, rows)

    return Response(
        await run_in_threadpool(run),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="audit-log.csv"'},
    )


ROUTES: list[BaseRoute] = [
    Route("/policy", policy_page, methods=["GET"]),
    Route("/policy", publish, methods=["POST"]),
    Route("/policy/{version}/coverage", coverage, methods=["GET"]),
    Route("/policy/{version}/coverage.csv", coverage_csv, methods=["GET"]),
    Route("/policy/{version}/resend", resend, methods=["POST"]),
    Route("/audit", audit_log, methods=["GET"]),
    Route("/audit.csv", audit_csv, methods=["GET"]),
]
