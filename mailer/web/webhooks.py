"""`POST /webhooks/{provider}`: relay providers' event webhooks (SES via SNS, SendGrid,
Postmark, Mailgun).

Thin: read the body (at most `MAX_BODY_BYTES`), let the provider's module verify the signature
and freshness (`mailer.deliverability.providers`), apply the events in a worker thread, answer
JSON. A refused request gets the status and the reason (a provider's dashboard shows it), and
changes nothing. The answer for applied events is 200 even when some were not ours, so the
provider does not retry them forever.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailer.deliverability.providers import (
    WebhookRefused,
    apply_provider_events,
    mailgun,
    verify_and_parse,
)
from mailer.models import utcnow
from mailer.runtime import Runtime

#: The largest body taken: SendGrid batches events, but never this many.
MAX_BODY_BYTES = 1024 * 1024


async def receive(request: Request) -> Response:
    provider = request.path_params["provider"]
    runtime: Runtime = request.app.state.web.runtime
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        return _refused(WebhookRefused(413, f"body over {MAX_BODY_BYTES} bytes"))
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _refused(WebhookRefused(413, f"body over {MAX_BODY_BYTES} bytes"))
    try:
        events = await run_in_threadpool(
            verify_and_parse, provider, runtime.settings, dict(request.headers), body
        )
        also_record = None
        if provider == "mailgun":
            token, now = mailgun.token_of(body), utcnow()

            def also_record(session):  # type: ignore[no-untyped-def]
                mailgun.record_token(session, token, now)

        applied = await run_in_threadpool(
            apply_provider_events, runtime, provider, events, also_record=also_record
        )
    except WebhookRefused as exc:
        return _refused(exc)
    return JSONResponse({"provider": provider, **applied.as_dict()})


def _refused(exc: WebhookRefused) -> Response:
    return JSONResponse({"error": exc.reason}, status_code=exc.status)
