"""What the admin app and the API share: the runtime, the batch dispatcher, the actor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import StreamingResponse

from mailer import reports
from mailer.access import Actor, LoginThrottle
from mailer.delivery.batches import Dispatch
from mailer.errors import NotFoundError
from mailer.models import MAX_ID
from mailer.runtime import Runtime
from mailer.web.security import client_ip


@dataclass
class AppContext:
    runtime: Runtime
    #: Hands planned batches to the workers (None: leave them for the sweep).
    dispatch: Dispatch | None
    #: Failed sign-ins per (IP, username), shared through Redis when the broker is Redis.
    throttle: LoginThrottle

    @property
    def secret(self) -> bytes:
        return self.runtime.settings.secret_key.reveal().encode()


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def actor(request: Request) -> Actor:
    """The signed-in actor (endpoints behind `allow` always have one)."""
    who: Actor = request.state.actor
    return who


def ip_of(request: Request) -> str:
    trusted = context(request).runtime.settings.trusted_proxy
    return client_ip(request.scope, trusted_proxy=trusted)


class IdConvertor(IntegerConvertor):
    """`{name:id}` in a route: a row id of at most 10 digits. A longer one matches no route
    (404), where `int` would convert it and Python refuses an int of over 4,300 digits (500)."""

    regex = "[0-9]{1,10}"


register_url_convertor("id", IdConvertor())


def int_param(request: Request, name: str) -> int:
    """A path parameter declared `{name:id}`; an id past any column's range is not found."""
    value = int(request.path_params[name])
    if value > MAX_ID:
        raise NotFoundError(f"no {name.removesuffix('_id')} {value}")
    return value


def report_csv_response(request: Request, campaign_id: int) -> StreamingResponse:
    """Every send of a campaign as a streamed CSV download (the caller checked visibility)."""
    session = context(request).runtime.sessions()

    def chunks() -> Iterator[str]:
        try:
            yield from reports.report_csv(session, campaign_id)
        finally:
            session.close()

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
    )
