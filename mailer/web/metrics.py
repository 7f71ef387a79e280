"""`GET /metrics`: Prometheus text format, for loopback clients or a bearer token.

The metrics hold no personal data, but they tell how much CPI sends to whom and when: only a
client on this machine (the socket peer, or with MAILER_TRUSTED_PROXY the forwarded address) or
one presenting `Authorization: Bearer <MAILER_METRICS_TOKEN>` gets them; anyone else gets 404,
like any unknown page.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from mailer.metrics import render_metrics
from mailer.runtime import Runtime
from mailer.web.security import client_ip


def _is_allowed(request: Request, runtime: Runtime) -> bool:
    token = runtime.settings.metrics_token.reveal()
    given = request.headers.get("authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    ip = client_ip(request.scope, trusted_proxy=runtime.settings.trusted_proxy)
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _queue_depths(runtime: Runtime) -> Any:
    if runtime.settings.is_embedded_broker:
        return None
    from workers.broker import queue_depths  # the broker layout lives with the broker

    return lambda: queue_depths(runtime.settings)


async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.web.runtime
    if not _is_allowed(request, runtime):
        raise HTTPException(404)
    body = await run_in_threadpool(render_metrics, runtime, _queue_depths(runtime))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
