"""Campaign screens: list, editor with a live audience count, preview, test send, launch,
progress, pause/resume/cancel, report."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from mailer import campaigns, previews, reports, template_store
from mailer.access.permissions import ALLOWED_CATEGORIES
from mailer.campaigns.times import parse_time
from mailer.enums import CampaignStatus, Category, Role
from mailer.errors import (
    CampaignError,
    MailerError,
    NotFoundError,
    PermissionDeniedError,
    RuleError,
    TemplateError,
)
from mailer.models import User, parse_id
from mailer.web.admin.pages import (
    ZONES,
    checked_form,
    done,
    field,
    is_htmx,
    render,
)
from mailer.web.context import actor, context, int_param, report_csv_response
from mailer.web.guard import allow

SENDERS = (Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
#: Campaign states shown with live progress.
LIVE = (CampaignStatus.SENDING, CampaignStatus.PAUSED, CampaignStatus.SCHEDULED)
#: The sandbox of the preview iframe: no scripts, no forms, no same-origin access.
PREVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


def _load(request: Request, campaign_id: int) -> tuple[Any, reports.CampaignCounts]:
    with context(request).runtime.sessions() as session:
        campaign = reports.get_visible_campaign(session, actor(request), campaign_id)
        counts = reports.campaign_counts(session, [campaign_id])[campaign_id]
        session.expunge(campaign)
    return campaign, counts


def _templates_for(request: Request) -> list[dict[str, str]]:
    """Built-in and stored templates the user may send (a broken built-in is left out)."""
    rt = context(request).runtime
    with rt.sessions() as session:
        choices = template_store.template_choices(session, rt.settings, actor(request))
    return [t for t in choices if not t.get("error")]


@allow(*SENDERS)
async def campaign_list(request: Request) -> Response:
    """Campaigns with filters and per-campaign counts."""
    q = request.query_params
    status = q.get("status", "") if q.get("status", "") in set(CampaignStatus) else ""
    category = q.get("category", "") if q.get("category", "") in set(Category) else ""
    search = q.get("q", "")[:100]
    before = q.get("before", "")

    def run() -> list[reports.CampaignRow]:
        with context(request).runtime.sessions() as session:
            rows = reports.list_campaign_rows(
                session,
                actor(request),
                status=status,
                category=category,
                search=search,
                limit=50,
                before_id=parse_id(before),
            )
            for row in rows:
                session.expunge(row.campaign)
            return rows

    rows = await run_in_threadpool(run)
    return render(
        request,
        "campaigns.html",
        rows=rows,
        status=status,
        category=category,
        search=search,
        statuses=list(CampaignStatus),
        categories=sorted(ALLOWED_CATEGORIES[Role(actor(request).role)]),
        next_before=rows[-1].campaign.id if len(rows) == 50 else None,
    )


def _editor(
    request: Request,
    *,
    values: dict[str, str],
    errors: dict[str, Any],
    count: Any = None,
    campaign_id: int | None = None,
) -> Response:
    categories = sorted(ALLOWED_CATEGORIES[Role(actor(request).role)])
    return render(
        request,
        "campaign_new.html",
        status_code=422 if errors else 200,
        values=values,
        errors=errors,
        count=count,
        templates=_templates_for(request),
        categories=categories,
        campaign_id=campaign_id,
    )


@allow(*SENDERS)
async def new_campaign(request: Request) -> Response:
    """The editor for a new campaign."""
    categories = sorted(ALLOWED_CATEGORIES[Role(actor(request).role)])
    values = {"name": "", "category": categories[0], "template": "", "subject": "", "rule": ""}
    return _editor(request, values=values, errors={})


def _form_values(form: FormData) -> dict[str, str]:
    return {
        "name": field(form, "name"),
        "category": field(form, "category"),
        "template": field(form, "template"),
        "subject": field(form, "subject"),
        "rule": str(form.get("rule", "")),
    }


def _rule_error(exc: RuleError) -> dict[str, Any]:
    return {
        "message": exc.message,
        "line": exc.line,
        "column": exc.column,
        "suggestion": exc.suggestion or "",
    }


async def _count(request: Request, values: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """The audience count for the form's rule and category, or the errors to show."""
    if values["category"] not in set(Category):
        return None, {"category": "Choose a category."}
    try:
        result = await run_in_threadpool(
            lambda: previews.count_audience(
                context(request).runtime,
                actor(request),
                rule_text=values["rule"],
                category=values["category"],
                sample_size=5,
            )
        )
    except RuleError as exc:
        return None, {"rule": _rule_error(exc)}
    except PermissionDeniedError as exc:
        return None, {"category": str(exc)}
    return result, {}


@allow(*SENDERS)
async def audience_count(request: Request) -> Response:
    """Live count and sample of the rule being typed (a fragment for htmx, else the editor)."""
    form = await checked_form(request)
    values = _form_values(form)
    count, errors = await _count(request, values)
    if is_htmx(request):
        return render(request, "_audience.html", count=count, errors=errors, values=values)
    return _editor(request, values=values, errors=errors, count=count)


@allow(*SENDERS)
async def create(request: Request) -> Response:
    """Create the draft, or show the editor again with each problem beside its field."""
    return await _save(request, None)


@allow(*SENDERS)
async def edit_page(request: Request) -> Response:
    """The editor for a draft."""
    campaign, _ = await run_in_threadpool(_load, request, int_param(request, "campaign_id"))
    if campaign.status != CampaignStatus.DRAFT:
        raise CampaignError(f"campaign {campaign.id} is {campaign.status}; only a draft is edited")
    values = {
        "name": campaign.name,
        "category": campaign.category,
        "template": campaign.template,
        "subject": campaign.subject,
        "rule": campaign.rule_text,
    }
    count, errors = await _count(request, values)
    return _editor(request, values=values, errors=errors, count=count, campaign_id=campaign.id)


@allow(*SENDERS)
async def edit(request: Request) -> Response:
    """Save the draft, or show the editor again with each problem beside its field."""
    return await _save(request, int_param(request, "campaign_id"))


async def _save(request: Request, campaign_id: int | None) -> Response:
    form = await checked_form(request)
    values = _form_values(form)
    if campaign_id is not None:
        campaign, _ = await run_in_threadpool(_load, request, campaign_id)
        values["category"] = campaign.category  # fixed once created
    if form.get("check"):  # the "Check audience" button of the no-JavaScript editor
        count, found = await _count(request, values)
        return _editor(request, values=values, errors=found, count=count, campaign_id=campaign_id)
    errors: dict[str, Any] = {}
    if not values["name"]:
        errors["name"] = "Give the campaign a name, e.g. “Open enrollment 2027”."
    if values["template"] not in {t["name"] for t in _templates_for(request)}:
        errors["template"] = "Choose one of the templates listed."
    count, count_errors = await _count(request, values)
    errors.update(count_errors)
    if errors:
        return _editor(request, values=values, errors=errors, count=count, campaign_id=campaign_id)
    rt, who = context(request).runtime, actor(request)

    def run() -> Any:
        if campaign_id is None:
            return campaigns.create_campaign(
                rt,
                actor=who,
                name=values["name"],
                category=values["category"],
                template=values["template"],
                rule_text=values["rule"],
                subject=values["subject"],
            )
        return campaigns.edit_draft(
            rt,
            campaign_id,
            actor=who,
            name=values["name"],
            template=values["template"],
            rule_text=values["rule"],
            subject=values["subject"],
        )

    try:
        saved = await run_in_threadpool(run)
    except RuleError as exc:
        errors = {"rule": _rule_error(exc)}
    except TemplateError as exc:
        at_subject = exc.template == "campaign subject"
        errors = {"subject" if at_subject else "template": str(exc)}
    except CampaignError as exc:
        errors = {"template": str(exc)}
    if errors:
        return _editor(request, values=values, errors=errors, campaign_id=campaign_id)
    notice = "created" if campaign_id is None else "saved"
    return done(request, f"/admin/campaigns/{saved.id}?notice={notice}")


@allow(*SENDERS)
async def campaign_page(request: Request) -> Response:
    """One campaign: what it is, its progress or its actions, preview and test send."""
    campaign_id = int_param(request, "campaign_id")
    campaign, counts = await run_in_threadpool(_load, request, campaign_id)
    sample = await _sample(request, campaign)
    return render(
        request,
        "campaign.html",
        campaign=campaign,
        counts=counts,
        sample=sample,
        test_to=request.query_params.get("to", "") or _own_email(request),
        deliveries=None,
        test_error="",
    )


def _own_email(request: Request) -> str:
    with context(request).runtime.sessions() as session:
        user = session.get(User, actor(request).user_id)
        return user.email if user else ""


async def _sample(request: Request, campaign: Any) -> Any:
    if campaign.status != CampaignStatus.DRAFT:
        return None
    try:
        return await run_in_threadpool(
            lambda: previews.count_audience(
                context(request).runtime,
                actor(request),
                rule_text=campaign.rule_text,
                category=campaign.category,
                sample_size=5,
            )
        )
    except MailerError:
        return None


@allow(*SENDERS)
async def progress(request: Request) -> Response:
    """The progress fragment; it stops polling itself once the campaign is finished."""
    campaign, counts = await run_in_threadpool(_load, request, int_param(request, "campaign_id"))
    response = render(request, "_progress.html", campaign=campaign, counts=counts)
    if is_htmx(request) and campaign.status not in (
        CampaignStatus.SENDING,
        CampaignStatus.SCHEDULED,
    ):
        # the last poll: reload the page once so its status and buttons say finished too
        response.headers["hx-refresh"] = "true"
    return response


async def _preview_of(request: Request) -> tuple[Any, Any]:
    campaign, _ = await run_in_threadpool(_load, request, int_param(request, "campaign_id"))
    contact = request.query_params.get("contact", "").strip()
    if not contact:
        raise NotFoundError("choose a contact to preview as (their email address)")
    result = await run_in_threadpool(
        lambda: previews.preview_message(
            context(request).runtime,
            actor(request),
            template=campaign.template,
            contact=contact,
            params=campaign.params,
            campaign_id=campaign.id,
        )
    )
    return campaign, result


@allow(*SENDERS)
async def preview(request: Request) -> Response:
    """The message as one contact would get it: headers, text part, HTML in a sandbox."""
    campaign, result = await _preview_of(request)
    return render(request, "preview.html", campaign=campaign, preview=result)


@allow(*SENDERS)
async def preview_html(request: Request) -> Response:
    """The HTML part alone, for the preview's sandboxed iframe (no scripts, nothing loaded)."""
    _, result = await _preview_of(request)
    return _sandboxed(result.html)


def _sandboxed(html: str) -> HTMLResponse:
    """An email's HTML for a frame of this site only, with no scripts and nothing loaded."""
    return HTMLResponse(
        html,
        headers={
            "content-security-policy": PREVIEW_CSP,
            "x-frame-options": "SAMEORIGIN",
            "cache-control": "no-store",
        },
    )


@allow(*SENDERS)
async def test_send(request: Request) -> Response:
    """Render as contact X, deliver to addresses Y, marked as a test; never in the send log."""
    form = await checked_form(request)
    campaign_id = int_param(request, "campaign_id")
    campaign, counts = await run_in_threadpool(_load, request, campaign_id)
    contact = field(form, "contact")
    to = str(form.get("to", ""))
    deliveries = None
    error = ""
    try:
        if not contact:
            raise previews.TestSendError("choose the contact to render as", field="contact")
        deliveries = await previews.send_test(
            context(request).runtime,
            actor(request),
            template=campaign.template,
            contact=contact,
            to=to.replace(",", "\n").splitlines(),
            params=campaign.params,
            campaign_id=campaign_id,
        )
    except (previews.TestSendError, NotFoundError, PermissionDeniedError) as exc:
        error = str(exc)
    if is_htmx(request):
        return render(
            request,
            "_test_send.html",
            campaign=campaign,
            deliveries=deliveries,
            test_error=error,
            test_to=to,
            contact=contact,
        )
    sample = await _sample(request, campaign)
    return render(
        request,
        "campaign.html",
        status_code=422 if error else 200,
        campaign=campaign,
        counts=counts,
        sample=sample,
        deliveries=deliveries,
        test_error=error,
        test_to=to,
    )


@allow(*SENDERS)
async def launch_page(request: Request) -> Response:
    """The confirmation: how many contacts this goes to, now or at a time in a named zone."""
    campaign, _ = await run_in_threadpool(_load, request, int_param(request, "campaign_id"))
    count = await _sample(request, campaign)
    return render(
        request,
        "launch.html",
        campaign=campaign,
        count=count,
        zones=ZONES,
        zone=context(request).runtime.settings.timezone,
        at="",
        error="",
    )


def _schedule(form: FormData, default_zone: str) -> tuple[dt.datetime | None, str]:
    """The launch time the form asks for in its zone (None: now), or the error to show."""
    when = field(form, "at")
    if form.get("when") != "later":
        return None, ""
    if not when:
        return None, "Give the date and time to send at, or choose “Send now”."
    zone_name = field(form, "zone") or default_zone
    if zone_name not in ZONES and zone_name != default_zone:
        return None, "Choose a time zone from the list."
    try:
        # the core's parser: refuses a wall time that does not exist (clocks going forward)
        at = parse_time(f"{when} {zone_name}", default_zone)
    except CampaignError as exc:
        return None, str(exc)
    if at <= dt.datetime.now(dt.UTC):
        return None, "That time has passed; choose a time in the future, or “Send now”."
    return at, ""


@allow(*SENDERS)
async def launch(request: Request) -> Response:
    """Launch after the confirmation (now, or scheduled in the chosen zone)."""
    form = await checked_form(request)
    campaign_id = int_param(request, "campaign_id")
    campaign, _ = await run_in_threadpool(_load, request, campaign_id)
    at, error = _schedule(form, context(request).runtime.settings.timezone)
    if not error and form.get("confirm") != "yes":
        error = "Tick the box to confirm who this goes to."
    if error:
        count = await _sample(request, campaign)
        return render(
            request,
            "launch.html",
            status_code=422,
            campaign=campaign,
            count=count,
            zones=ZONES,
            zone=field(form, "zone") or context(request).runtime.settings.timezone,
            at=field(form, "at"),
            error=error,
        )
    ctx = context(request)
    await run_in_threadpool(
        lambda: campaigns.launch_campaign(
            ctx.runtime,
            campaign_id,
            actor=actor(request),
            dispatch=ctx.dispatch,
            at=at,
        )
    )
    notice = "scheduled" if at else "launched"
    return done(request, f"/admin/campaigns/{campaign_id}?notice={notice}")


def _transition(action: str) -> Any:
    async def endpoint(request: Request) -> Response:
        await checked_form(request)
        campaign_id = int_param(request, "campaign_id")
        await run_in_threadpool(_load, request, campaign_id)  # visible to this user?
        ctx = context(request)
        who = actor(request)

        await run_in_threadpool(
            campaigns.change_campaign,
            ctx.runtime,
            campaign_id,
            action,
            actor=who,
            dispatch=ctx.dispatch,
        )
        return done(request, f"/admin/campaigns/{campaign_id}?notice={action}d")

    endpoint.__name__ = action
    endpoint.__doc__ = f"{action.capitalize()} the campaign."
    return allow(*SENDERS)(endpoint)


pause = _transition("pause")
resume = _transition("resume")
cancel = _transition("cancel")


@allow(*SENDERS)
async def report(request: Request) -> Response:
    """Outcomes, skip reasons, and each failure with its SMTP reply."""
    campaign_id = int_param(request, "campaign_id")
    campaign, counts = await run_in_threadpool(_load, request, campaign_id)

    def run() -> tuple[list[reports.SendLine], Any]:
        with context(request).runtime.sessions() as session:
            snapshot = template_store.snapshot_of(session, campaign_id)
            return reports.failures(session, campaign_id), snapshot

    failures, snapshot = await run_in_threadpool(run)
    return render(
        request,
        "report.html",
        campaign=campaign,
        counts=counts,
        failures=failures,
        snapshot=snapshot,
    )


@allow(*SENDERS)
async def sample_html(request: Request) -> Response:
    """The HTML of the message rendered at launch (the snapshot), for a sandboxed frame."""
    campaign_id = int_param(request, "campaign_id")
    await run_in_threadpool(_load, request, campaign_id)

    def run() -> str:
        with context(request).runtime.sessions() as session:
            snapshot = template_store.get_snapshot(session, campaign_id)
            if snapshot is None:
                raise NotFoundError(
                    f"campaign {campaign_id} has no snapshot: one is kept when it launches"
                )
            return snapshot.sample_html

    return _sandboxed(await run_in_threadpool(run))


@allow(*SENDERS)
async def report_csv(request: Request) -> Response:
    """Every send of the campaign as CSV."""
    campaign_id = int_param(request, "campaign_id")
    await run_in_threadpool(_load, request, campaign_id)
    return report_csv_response(request, campaign_id)
