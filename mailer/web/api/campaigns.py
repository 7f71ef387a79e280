"""API: campaigns (create, preview, test send, launch, pause, resume, cancel, status, report)
and audiences (check, count, sample)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailer import campaigns, previews, reports, template_store
from mailer.campaigns import times
from mailer.enums import CampaignStatus, Category, Role
from mailer.errors import CampaignError, RuleError, TemplateError
from mailer.models import Campaign, parse_id
from mailer.rules import parse_rule
from mailer.web.context import actor, context, int_param, report_csv_response
from mailer.web.guard import allow
from mailer.web.openapi import Param, operation, read_body, read_query
from mailer.web.problems import InvalidInput, rule_error_fields

SENDERS = (Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
CATEGORIES = [c.value for c in Category]

COUNTS = {
    "type": "object",
    "properties": {
        k: {"type": "integer"}
        for k in (
            "total",
            "done",
            "sent",
            "queued",
            "deferred",
            "failed",
            "unknown",
            "skipped",
            "opt_outs",
            "bounces",
            "complaints",
        )
    }
    | {"skipped_by_reason": {"type": "object"}},
}
CAMPAIGN = {
    "type": "object",
    "required": ["id", "name", "category", "status", "template"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "category": {"type": "string", "enum": CATEGORIES},
        "status": {"type": "string", "enum": [s.value for s in CampaignStatus]},
        "status_detail": {"type": "string"},
        "template": {"type": "string"},
        "template_version_id": {
            "type": ["integer", "null"],
            "description": "the stored template version pinned at launch (null: built-in)",
        },
        "subject": {"type": "string", "description": "the campaign's own subject, if any"},
        "rule": {"type": "string"},
        "created_by": {"type": "string"},
        "scheduled_at": {"type": ["string", "null"]},
        "launched_at": {"type": ["string", "null"]},
        "completed_at": {"type": ["string", "null"]},
        "counts": COUNTS,
    },
}
#: What a launched campaign was sent with (null before launch).
SNAPSHOT = {
    "type": ["object", "null"],
    "properties": {
        "template": {"type": "string"},
        "template_version": {"type": ["integer", "null"]},
        "template_version_label": {"type": "string"},
        "content_hash": {"type": "string"},
        "subject_source": {"type": "string"},
        "sample_subject": {"type": "string"},
        "sample_email": {"type": "string"},
        "created_at": {"type": "string"},
    },
}
PAGE_QUERY = [
    Param("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}),
    Param("cursor", {"type": "string", "maxLength": 40}, "next_cursor of the previous page"),
]
CREATE = {
    "type": "object",
    "required": ["name", "category", "template"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "category": {"type": "string", "enum": CATEGORIES},
        "template": {"type": "string", "minLength": 1, "maxLength": 200},
        "rule": {"type": "string", "maxLength": 20000},
        "subject": {
            "type": "string",
            "maxLength": 300,
            "description": "replaces the template's subject (Jinja, checked like it)",
        },
    },
}
AS_CONTACT = {
    "type": "object",
    "required": ["contact_id"],
    "properties": {"contact_id": {"type": "integer", "minimum": 1}},
}
TEST_SEND = {
    "type": "object",
    "required": ["contact_id", "to"],
    "properties": {
        "contact_id": {"type": "integer", "minimum": 1},
        "to": {
            "type": "array",
            "minItems": 1,
            "maxItems": previews.MAX_TEST_RECIPIENTS,
            "items": {"type": "string", "maxLength": 320},
        },
    },
}
LAUNCH = {
    "type": "object",
    "properties": {
        "expected_count": {
            "type": "integer",
            "minimum": 0,
            "description": "refuse (409) unless the audience still has this many eligible",
        },
        "at": {"type": "string", "maxLength": 40, "description": "ISO 8601 time with zone"},
    },
}
AUDIENCE = {
    "type": "object",
    "required": ["category"],
    "properties": {
        "category": {"type": "string", "enum": CATEGORIES},
        "rule": {"type": "string", "maxLength": 20000},
        "sample": {"type": "integer", "minimum": 0, "maximum": 100},
    },
}
PREVIEW = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "text": {"type": "string"},
        "html": {"type": "string"},
        "headers": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
    },
}


def campaign_json(c: Campaign, counts: reports.CampaignCounts) -> dict[str, Any]:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": c.id,
        "name": c.name,
        "category": c.category,
        "status": c.status,
        "status_detail": c.status_detail,
        "template": c.template,
        "template_version_id": c.template_version_id,
        "subject": c.subject,
        "rule": c.rule_text,
        "created_by": c.created_by,
        "scheduled_at": iso(c.scheduled_at),
        "launched_at": iso(c.launched_at),
        "completed_at": iso(c.completed_at),
        "counts": counts.as_dict(),
    }


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        last_id = parse_id(value) if kind == "id" else None
        if last_id is not None:
            return last_id
    except ValueError:
        pass
    raise InvalidInput([{"field": "cursor", "message": "not a cursor this API gave out"}])


@allow(*SENDERS)
@operation(
    "campaigns",
    query=[
        *PAGE_QUERY,
        Param("status", {"type": "string", "enum": [s.value for s in CampaignStatus]}),
        Param("category", {"type": "string", "enum": CATEGORIES}),
    ],
    response={
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": CAMPAIGN},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
)
async def list_campaigns(request: Request) -> Response:
    """Campaigns the caller may see, newest first (keyset pagination)."""
    q = read_query(request)
    before = decode_cursor(q["cursor"])

    def run() -> dict[str, Any]:
        with context(request).runtime.sessions() as session:
            rows = reports.list_campaign_rows(
                session,
                actor(request),
                status=q["status"] or "",
                category=q["category"] or "",
                limit=q["limit"],
                before_id=before,
            )
            items = [campaign_json(r.campaign, r.counts) for r in rows]
        more = len(items) == q["limit"]
        return {"items": items, "next_cursor": encode_cursor(items[-1]["id"]) if more else None}

    return JSONResponse(await run_in_threadpool(run))


@allow(*SENDERS)
@operation("campaigns", body=CREATE, response=CAMPAIGN, status=201)
async def create_campaign(request: Request) -> Response:
    """Create a draft campaign (template and rule are checked first)."""
    body = await read_body(request)
    rt = context(request).runtime
    try:
        campaign = await run_in_threadpool(
            lambda: campaigns.create_campaign(
                rt,
                actor=actor(request),
                name=body["name"].strip(),
                category=body["category"],
                template=body["template"],
                rule_text=body.get("rule", ""),
                subject=body.get("subject", ""),
            )
        )
    except RuleError as exc:
        raise InvalidInput(rule_error_fields(exc)) from exc
    except TemplateError as exc:
        raise InvalidInput(_template_fields(exc)) from exc
    return JSONResponse(await _campaign(request, campaign.id), status_code=201)


def _template_fields(exc: TemplateError) -> list[dict[str, Any]]:
    field = "subject" if exc.template == "campaign subject" else "template"
    return [{"field": field, "message": str(exc)}]


async def _campaign(request: Request, campaign_id: int) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        with context(request).runtime.sessions() as session:
            c = reports.get_visible_campaign(session, actor(request), campaign_id)
            return campaign_json(c, reports.campaign_counts(session, [c.id])[c.id])

    return await run_in_threadpool(run)


@allow(*SENDERS)
@operation("campaigns", response=CAMPAIGN)
async def get_campaign(request: Request) -> Response:
    """A campaign's status and counts."""
    return JSONResponse(await _campaign(request, int_param(request, "campaign_id")))


EDIT = {
    "type": "object",
    "required": ["name", "template"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "template": {"type": "string", "minLength": 1, "maxLength": 200},
        "rule": {"type": "string", "maxLength": 20000},
        "subject": {
            "type": "string",
            "maxLength": 300,
            "description": "replaces the template's subject (Jinja, checked like it)",
        },
    },
}


@allow(*SENDERS)
@operation("campaigns", body=EDIT, response=CAMPAIGN)
async def edit_campaign(request: Request) -> Response:
    """Change a draft's name, template and rule (checked as at create)."""
    body = await read_body(request)
    campaign_id = int_param(request, "campaign_id")
    await _campaign(request, campaign_id)
    try:
        await run_in_threadpool(
            lambda: campaigns.edit_draft(
                context(request).runtime,
                campaign_id,
                actor=actor(request),
                name=body["name"],
                template=body["template"],
                rule_text=body.get("rule", ""),
                subject=body.get("subject"),
            )
        )
    except RuleError as exc:
        raise InvalidInput(rule_error_fields(exc)) from exc
    except TemplateError as exc:
        raise InvalidInput(_template_fields(exc)) from exc
    return JSONResponse(await _campaign(request, campaign_id))


@allow(*SENDERS)
@operation("campaigns", body=AS_CONTACT, response=PREVIEW)
async def preview_campaign(request: Request) -> Response:
    """The campaign's message as one contact would get it: subject, text, HTML, headers."""
    body = await read_body(request)
    campaign = await _campaign(request, int_param(request, "campaign_id"))
    result = await run_in_threadpool(
        lambda: previews.preview_message(
            context(request).runtime,
            actor(request),
            template=campaign["template"],
            contact=body["contact_id"],
            campaign_id=campaign["id"],
        )
    )
    return JSONResponse(
        {
            "subject": result.subject,
            "text": result.text,
            "html": result.html,
            "headers": [list(h) for h in result.headers],
        }
    )


@allow(*SENDERS)
@operation(
    "campaigns",
    body=TEST_SEND,
    response={"type": "object", "properties": {"deliveries": {"type": "array"}}},
)
async def test_send(request: Request) -> Response:
    """Render as one contact and deliver to the given addresses, marked as a test."""
    body = await read_body(request)
    campaign_id = int_param(request, "campaign_id")
    campaign = await _campaign(request, campaign_id)
    deliveries = await previews.send_test(
        context(request).runtime,
        actor(request),
        template=campaign["template"],
        contact=body["contact_id"],
        to=body["to"],
        campaign_id=campaign_id,
    )
    return JSONResponse({"deliveries": [vars(d) for d in deliveries]})


@allow(*SENDERS)
@operation("campaigns", body=LAUNCH, response=CAMPAIGN)
async def launch(request: Request) -> Response:
    """Launch now (or at `at`); with `expected_count`, only if the audience still has that many."""
    body = await read_body(request)
    campaign_id = int_param(request, "campaign_id")
    ctx = context(request)
    when = parse_time(body["at"], "at") if body.get("at") else None
    campaign = await _campaign(request, campaign_id)
    if body.get("expected_count") is not None:
        counted = await run_in_threadpool(
            lambda: previews.count_audience(
                ctx.runtime,
                actor(request),
                rule_text=campaign["rule"],
                category=campaign["category"],
                sample_size=0,
            )
        )
        if counted.eligible != body["expected_count"]:
            raise CampaignError(
                f"the audience now has {counted.eligible} eligible contacts, not "
                f"{body['expected_count']}; check the count and confirm again"
            )
    await run_in_threadpool(
        lambda: campaigns.launch_campaign(
            ctx.runtime,
            campaign_id,
            actor=actor(request),
            dispatch=ctx.dispatch,
            at=when,
        )
    )
    return JSONResponse(await _campaign(request, campaign_id))


def parse_time(text: str, field: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            [
                {
                    "field": field,
                    "message": f"{text!r} is not an ISO time like 2026-12-01T09:00-08:00",
                }
            ]
        ) from None
    if value.tzinfo is None:
        raise InvalidInput([{"field": field, "message": "give the time zone, e.g. -08:00"}])
    try:
        return times.to_utc(value, text)
    except CampaignError as exc:
        raise InvalidInput([{"field": field, "message": str(exc)}]) from None


def _transition(action: str) -> Any:
    async def endpoint(request: Request) -> Response:
        campaign_id = int_param(request, "campaign_id")
        ctx = context(request)
        await _campaign(request, campaign_id)  # 404/403 before anything changes
        who = actor(request)

        await run_in_threadpool(
            campaigns.change_campaign,
            ctx.runtime,
            campaign_id,
            action,
            actor=who,
            dispatch=ctx.dispatch,
        )
        return JSONResponse(await _campaign(request, campaign_id))

    endpoint.__name__ = f"{action}_campaign"
    endpoint.__doc__ = {
        "pause": "Pause a sending campaign; queued sends wait for resume.",
        "resume": "Resume a paused campaign.",
        "cancel": "Cancel for good; what is still queued is skipped.",
    }[action]
    return allow(*SENDERS)(operation("campaigns", response=CAMPAIGN)(endpoint))


pause = _transition("pause")
resume = _transition("resume")
cancel = _transition("cancel")


@allow(*SENDERS)
@operation(
    "campaigns",
    response={
        "type": "object",
        "properties": {
            "campaign": CAMPAIGN,
            "failures": {"type": "array"},
            "snapshot": SNAPSHOT,
        },
    },
)
async def report(request: Request) -> Response:
    """Counts, failed, unknown and deferred sends with their SMTP replies, and what was sent."""
    campaign_id = int_param(request, "campaign_id")
    campaign = await _campaign(request, campaign_id)

    def run() -> tuple[list[dict[str, Any]], Any]:
        with context(request).runtime.sessions() as session:
            failures = [vars(f) for f in reports.failures(session, campaign_id)]
            return failures, template_store.snapshot_of(session, campaign_id)

    failures, snapshot = await run_in_threadpool(run)
    return JSONResponse({"campaign": campaign, "failures": failures, "snapshot": snapshot})


@allow(*SENDERS)
@operation("campaigns", response={"type": "string"}, content_type="text/csv")
async def report_csv(request: Request) -> Response:
    """Every send of the campaign as CSV (formula-looking cells defused)."""
    campaign_id = int_param(request, "campaign_id")
    await _campaign(request, campaign_id)
    return report_csv_response(request, campaign_id)


@allow(*SENDERS)
@operation(
    "audiences",
    body={
        "type": "object",
        "required": ["rule"],
        "properties": {"rule": {"type": "string", "maxLength": 20000}},
    },
    response={
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "errors": {"type": "array"}},
    },
)
async def check_rule(request: Request) -> Response:
    """Parse and check an audience rule; errors carry line, column and a suggestion."""
    body = await read_body(request)
    try:
        parse_rule(body["rule"], "rule")
    except RuleError as exc:
        return JSONResponse({"ok": False, "errors": rule_error_fields(exc)})
    return JSONResponse({"ok": True, "errors": []})


@allow(*SENDERS)
@operation(
    "audiences",
    body=AUDIENCE,
    response={
        "type": "object",
        "properties": {
            "eligible": {"type": "integer"},
            "matched": {"type": "integer"},
            "excluded": {"type": "object"},
            "sample": {"type": "array"},
        },
    },
)
async def count_audience(request: Request) -> Response:
    """How many contacts a rule reaches in a category, what each guard excludes, a sample."""
    body = await read_body(request)
    try:
        result = await run_in_threadpool(
            lambda: previews.count_audience(
                context(request).runtime,
                actor(request),
                rule_text=body.get("rule", ""),
                category=body["category"],
                sample_size=body.get("sample", 10),
            )
        )
    except RuleError as exc:
        raise InvalidInput(rule_error_fields(exc)) from exc
    data = result.as_dict()
    return JSONResponse({k: data[k] for k in ("eligible", "matched", "excluded", "sample")})
