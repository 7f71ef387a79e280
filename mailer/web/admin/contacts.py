"""Contact screens: search, a contact's page, CSV import with a dry run, and the admin's
manual opt-out, suppression and unsuppression (each with a reason)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mailer.contacts import import_contacts
from mailer.contacts.compliance import (
    ComplianceError,
    admin_opt_out,
    suppress_contact,
    unsuppress_contact,
)
from mailer.contacts.lookup import ContactPage, ContactRecord, contact_record, search_contacts
from mailer.enums import OPT_OUT_SCOPES, Role
from mailer.errors import ContactImportError, MailerError
from mailer.models import parse_id
from mailer.web.admin.pages import checked_form, done, field, render
from mailer.web.context import actor, context, int_param
from mailer.web.guard import allow

#: The largest CSV the import form takes; bigger files go through `mailer import`.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@allow(Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
async def search(request: Request) -> Response:
    """Search contacts by email, name or organization (account managers: their clients)."""
    text = request.query_params.get("q", "")[:200]
    after = request.query_params.get("after", "")

    def run() -> ContactPage:
        with context(request).runtime.sessions() as session:
            return search_contacts(session, actor(request), text, after_id=parse_id(after))

    page = await run_in_threadpool(run)
    return render(request, "contacts.html", rows=page.items, q=text, next_after=page.next_after_id)


def _details(request: Request, contact_id: int) -> ContactRecord:
    with context(request).runtime.sessions() as session:
        return contact_record(session, actor(request), contact_id)


@allow(Role.ADMIN, Role.MARKETING, Role.ACCOUNT_MANAGER)
async def contact_page(request: Request) -> Response:
    """A contact: consent per category, suppression, send history."""
    details = await run_in_threadpool(_details, request, int_param(request, "contact_id"))
    return render(request, "contact.html", d=details, scopes=OPT_OUT_SCOPES, error="")


def _change(kind: str) -> Any:
    async def endpoint(request: Request) -> Response:
        form = await checked_form(request)
        contact_id = int_param(request, "contact_id")
        reason = field(form, "reason")
        scope = field(form, "scope")

        def run() -> None:
            who = actor(request)
            with context(request).runtime.sessions.begin() as session:
                if kind == "opt-out":
                    admin_opt_out(session, who, contact_id, scope, reason)
                elif kind == "suppress":
                    suppress_contact(session, who, contact_id, reason)
                else:
                    unsuppress_contact(session, who, contact_id, reason)

        try:
            await run_in_threadpool(run)
        except (ComplianceError, ValueError) as exc:
            details = await run_in_threadpool(_details, request, contact_id)
            return render(
                request,
                "contact.html",
                status_code=422,
                d=details,
                scopes=OPT_OUT_SCOPES,
                error=str(exc),
            )
        return done(request, f"/admin/contacts/{contact_id}?notice={kind}")

    endpoint.__name__ = kind.replace("-", "_")
    endpoint.__doc__ = {
        "opt-out": "Opt the contact out of a category on their behalf, with a reason.",
        "suppress": "Stop all mail to the contact's address, with a reason.",
        "unsuppress": "Lift the suppression of the contact's address, with a reason.",
    }[kind]
    return allow(Role.ADMIN)(endpoint)


opt_out = _change("opt-out")
suppress = _change("suppress")
unsuppress = _change("unsuppress")


@allow(Role.ADMIN)
async def import_page(request: Request) -> Response:
    """The CSV import form."""
    return render(request, "import.html", report=None, error="", problems=[])


@allow(Role.ADMIN)
async def import_file(request: Request) -> Response:
    """Import a CSV, or with "dry run" only report what it would do; nothing half-imported."""
    form = await checked_form(request)
    upload = form.get("file")
    is_dry_run = form.get("dry_run") == "yes"
    skip_invalid = form.get("skip_invalid") == "yes"
    if not isinstance(upload, UploadFile) or not upload.filename:
        return render(
            request,
            "import.html",
            status_code=422,
            report=None,
            problems=[],
            error="Choose a CSV file.",
        )
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        return render(
            request,
            "import.html",
            status_code=413,
            report=None,
            problems=[],
            error="The file is over 20 MB; import it with `mailer import` on the server.",
        )
    name = os.path.basename(upload.filename)

    def run() -> Any:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, name)
            with open(path, "wb") as out:
                out.write(data)
            return import_contacts(
                context(request).runtime,
                path,
                dry_run=is_dry_run,
                skip_invalid=skip_invalid,
                rejects_path=os.path.join(folder, "rejected.csv"),
                actor=actor(request),
            )

    try:
        report = await run_in_threadpool(run)
    except ContactImportError as exc:
        return render(
            request,
            "import.html",
            status_code=422,
            report=None,
            error=str(exc)
            .replace(exc.path, name)
            .replace("with --skip-invalid", "by ticking “Import the good rows”"),
            problems=exc.problems[:200],
        )
    except MailerError as exc:
        return render(
            request, "import.html", status_code=422, report=None, problems=[], error=str(exc)
        )
    return render(request, "import.html", report=report, error="", problems=report.problems[:200])


ROUTES: list[BaseRoute] = [
    Route("/contacts", search, methods=["GET"]),
    Route("/contacts/import", import_page, methods=["GET"]),
    Route("/contacts/import", import_file, methods=["POST"]),
    Route("/contacts/{contact_id:id}", contact_page, methods=["GET"]),
    Route("/contacts/{contact_id:id}/opt-out", opt_out, methods=["POST"]),
    Route("/contacts/{contact_id:id}/suppress", suppress, methods=["POST"]),
    Route("/contacts/{contact_id:id}/unsuppress", unsuppress, methods=["POST"]),
]
