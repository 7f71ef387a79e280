"""The web app (Starlette): what a recipient of CPI's mail sees, the admin app and the API.

`create_app(settings)` builds it: the public pages at the root, the admin app under `/admin`
(`mailer.web.admin`) and the JSON API under `/api/v1` (`mailer.web.api`). The public pages set
no cookies and share nothing with the admin, whose session cookie is scoped to `/admin`.
`mailer.web:app` is the app for the environment's settings, built on first access so
importing this package connects to nothing. Errors become pages
here, in one place: every 404 (unknown path, bad or tampered token, erased contact) looks the
same and names nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from mailer.access import make_login_throttle
from mailer.config import Settings
from mailer.delivery.batches import Dispatch
from mailer.errors import NotFoundError
from mailer.runtime import Runtime, open_runtime
from mailer.tokens import TokenSigner
from mailer.web import metrics, problems, public, webhooks
from mailer.web.admin import create_admin_app
from mailer.web.api import create_api_app
from mailer.web.context import AppContext
from mailer.web.dispatch import WebDispatcher
from mailer.web.pages import make_environment, render
from mailer.web.security import (
    BodyLimitMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
    SlidingWindowLimiter,
    redact_tokens_in_server_logs,
)

__all__ = ["create_app"]

#: Health checks per visitor and minute; a load balancer checks every few seconds.
HEALTHZ_PER_MINUTE = 120


class _PublicApp(Starlette):
    """Starlette with the security headers outside everything, the 500 page included
    (Starlette runs its 500 handler outside the middleware it is given)."""

    def __init__(self, headers: type[SecurityHeadersMiddleware], is_https: bool, **kw: Any) -> None:
        self._headers, self._is_https = headers, is_https
        super().__init__(**kw)

    def build_middleware_stack(self) -> ASGIApp:
        return self._headers(super().build_middleware_stack(), is_https=self._is_https)


#: Where the JSON API is mounted.
API_PREFIX = "/api/v1/"
_API_NOT_FOUND = f"no such API resource; the operations are listed in {API_PREFIX}openapi.json"

_ERROR_TITLES = {
    400: "That request could not be understood",
    403: "That form can only be sent from our own page",
    404: "Page not found",
    405: "Page not found",
    413: "That request is too large",
}


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    dispatch: Dispatch | None = None,
) -> Starlette:
    """The app over `runtime`, or over a runtime opened from `settings` (default: env).

    A runtime opened here is closed when the app shuts down; one passed in belongs to the caller.
    `dispatch` hands launched campaigns' batches to workers; by default the app starts what
    the broker setting asks for (Redis, or worker threads in this process) on first use.
    """
    is_owned = runtime is None
    if runtime is None:
        runtime = open_runtime(settings or Settings.from_env(), check_schema=False)
    settings = runtime.settings
    env = make_environment(settings)
    css_path = settings.templates_dir / "web" / "web.css"

    async def stylesheet(request: Request) -> Response:
        return FileResponse(
            css_path, media_type="text/css", headers={"cache-control": "max-age=3600"}
        )

    async def error_page(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if isinstance(exc, NotFoundError):
            status = 404  # e.g. a contact erased between reading the page and the click
        if status in (404, 405):
            status = 404  # a wrong method on a token URL reveals no more than a wrong token
        if request.scope.get("path", "").startswith(API_PREFIX):
            # a path the API's mount cannot match (a control character in it, say) is still
            # the API's: it answers problem+json like every other API error
            if status == 500:
                return await problems.handle_crash(request, exc)
            return problems.problem(status, _API_NOT_FOUND if status == 404 else str(exc))
        title = _ERROR_TITLES.get(status, "Something went wrong")
        return render(env, "error.html", status_code=status, title=title, status=status)

    dispatcher = None if dispatch is not None else WebDispatcher(runtime)
    ctx = AppContext(
        runtime=runtime,
        dispatch=dispatch or dispatcher.dispatch,  # type: ignore[union-attr]
        throttle=make_login_throttle(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if dispatcher is not None:
            dispatcher.close()
        if is_owned:
            runtime.close()

    routes = [
        Route("/u/{token}", public.unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", public.one_click, methods=["POST"]),
        Route("/preferences/{token}", public.preferences_page, methods=["GET", "POST"]),
        Route("/privacy", public.privacy_page, methods=["GET"]),
        Route("/privacy/{version}", public.privacy_page, methods=["GET"]),
        Route("/healthz", public.healthz, methods=["GET"]),
        Route("/webhooks/{provider}", webhooks.receive, methods=["POST"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/assets/web.css", stylesheet, methods=["GET"]),
        Mount("/admin", create_admin_app(ctx)),
        Mount(API_PREFIX.rstrip("/"), create_api_app(ctx)),
    ]
    middleware = [
        Middleware(
            RateLimitMiddleware,
            limiter=SlidingWindowLimiter(settings.web_rate_limit_per_minute, 60.0),
            trusted_proxy=settings.trusted_proxy,
        ),
        Middleware(
            RateLimitMiddleware,
            limiter=SlidingWindowLimiter(HEALTHZ_PER_MINUTE, 60.0),
            trusted_proxy=settings.trusted_proxy,
            prefixes=("/healthz",),
            name="healthz",
        ),
        Middleware(
            BodyLimitMiddleware,
            max_bytes=public.MAX_FORM_BYTES,
            skip_prefixes=("/admin/", "/api/"),  # their own, larger limit (CSV imports)
        ),
    ]
    redact_tokens_in_server_logs()  # however the app is served (`uvicorn mailer.web:app`)
    app = _PublicApp(
        SecurityHeadersMiddleware,
        settings.public_base_url.startswith("https://"),
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HTTPException: error_page,
            NotFoundError: error_page,
            Exception: error_page,
        },
        lifespan=lifespan,
    )
    app.state.web = public.WebContext(runtime=runtime, env=env, signer=TokenSigner(settings))
    return app


_app: Starlette | None = None


def __getattr__(name: str) -> Any:
    # `uvicorn mailer.web:app` asks for `app`; build it then, not at import.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(f"module 'mailer.web' has no attribute {name!r}")
