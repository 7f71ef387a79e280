"""RFC 9457 problem details for the JSON API: every error is `application/problem+json`.

Core errors map to statuses in one table (`STATUS_OF`); a 422 names each bad field and its fix
in `errors: [{"field", "message"}]`. Headers an HTTPException carries (`Allow` on 405,
`WWW-Authenticate` on 401, `Retry-After` on 429) are kept.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mailer.access import ApiTokenError, UserError
from mailer.errors import (
    CampaignError,
    ContactImportError,
    MailerError,
    NotFoundError,
    PermissionDeniedError,
    PolicyError,
    RuleError,
    TemplateError,
)
from mailer.previews import TestSendError

PROBLEM_TYPE = "application/problem+json"

#: Status for each core error (the first matching class wins).
STATUS_OF: list[tuple[type[MailerError], int]] = [
    (NotFoundError, 404),
    (PermissionDeniedError, 403),
    (RuleError, 422),
    (TemplateError, 422),
    (TestSendError, 422),
    (UserError, 422),
    (ApiTokenError, 422),
    (ContactImportError, 422),
    (CampaignError, 409),
    (PolicyError, 409),
]

TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
}


class ProblemResponse(Response):
    media_type = PROBLEM_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False).encode("utf-8")


class InvalidInput(Exception):
    """Bad fields in an API request; each error names the field and the fix."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


def problem(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> ProblemResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return ProblemResponse(body, status_code=status, headers=headers)


def status_for(exc: MailerError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 400


def rule_error_fields(exc: RuleError, field: str = "rule") -> list[dict[str, Any]]:
    item: dict[str, Any] = {"field": field, "message": exc.message}
    if exc.line:
        item.update(line=exc.line, column=exc.column)
    if exc.suggestion:
        item["suggestion"] = exc.suggestion
    return [item]


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route matching the path; a path
        # served by several routes (GET and POST endpoints) answers with all of them
        headers["allow"] = ", ".join(allowed_methods(request))
    return problem(exc.status_code, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    local = path[len(root) :] if root and path.startswith(root) else path
    methods: set[str] = set()
    for route in request.app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(local) and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


async def handle_mailer(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MailerError)
    status = status_for(exc)
    errors = None
    if isinstance(exc, RuleError):
        errors = rule_error_fields(exc)
    elif isinstance(exc, TestSendError):
        errors = [{"field": exc.field, "message": str(exc)}]
    elif isinstance(exc, ContactImportError):
        errors = [
            {"field": f"row {p.row}, column {p.column}", "message": p.reason}
            for p in exc.problems[:100]
        ]
    return problem(status, str(exc), errors=errors)


async def handle_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidInput)
    return problem(422, "the request has invalid fields; see errors", errors=exc.errors)


async def handle_crash(request: Request, exc: Exception) -> Response:
    return problem(500, "internal error; the server log has the details")
