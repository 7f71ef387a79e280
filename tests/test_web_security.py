"""Hardening of the public web app: cross-site forms, body limits, error pages, proxies,
rate limits per network, slow clients."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn
from sqlalchemy import select
from starlette.testclient import TestClient

from mailer.models import Contact, OptOut
from mailer.tokens import TokenSigner
from mailer.web import create_app

BASE_URL = "https://u.cpi.example"


@pytest.fixture
def client(rt) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=rt), base_url=BASE_URL, follow_redirects=False) as c:
        yield c


def _token(rt, contact: Contact, category: str = "promotions") -> str:
    return TokenSigner(rt.settings).make(contact.id, category, 0)


def _active_opt_outs(rt) -> list[str]:
    with rt.sessions() as s:
        return sorted(o.category for o in s.scalars(select(OptOut)) if o.revoked_at is None)


# ---- finding 11: cross-site POSTs ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "https://other.cpi.example"},
        {"sec-fetch-site": "cross-site", "origin": BASE_URL},
    ],
)
def test_a_preferences_post_from_another_site_is_refused_and_changes_nothing(
    rt, client, make_contact, headers: dict[str, str]
) -> None:
    # Given a contact who opted out of promotions
    contact = make_contact()
    token = _token(rt, contact)
    client.post(f"/preferences/{token}", data={"action": "unsubscribe_all"})
    before = _active_opt_outs(rt)
    assert before == ["all_marketing"]
    # When another site posts the form that would opt them back in
    form = {"all_marketing": "on", "promotions": "on", "features": "on", "action": "save"}
    response = client.post(f"/preferences/{token}", data=form, headers=headers)
    # Then it is refused and nothing changes
    assert response.status_code == 403
    assert "content-security-policy" in response.headers
    assert _active_opt_outs(rt) == before


def test_a_preferences_post_from_our_own_page_works(rt, client, make_contact) -> None:
    token = _token(rt, make_contact())
    # what Chromium sends under our Referrer-Policy: no-referrer
    headers = {"origin": "null", "sec-fetch-site": "same-origin"}
    response = client.post(f"/preferences/{token}", data={"action": "unsubscribe_all"},
                           headers=headers)  # fmt: skip
    assert response.status_code == 200 and _active_opt_outs(rt) == ["all_marketing"]
    # an older browser without Sec-Fetch-Site sends our origin
    response = client.post(f"/preferences/{token}", data={"action": "save"},
                           headers={"origin": BASE_URL})  # fmt: skip
    assert response.status_code == 200


def test_one_click_stays_open_to_mail_providers_posting_cross_site(rt, client, make_contact):
    token = _token(rt, make_contact())
    response = client.post(
        f"/u/{token}",
        data={"List-Unsubscribe": "One-Click"},
        headers={"origin": "https://mail.provider.example", "sec-fetch-site": "cross-site"},
    )
    assert response.status_code == 200 and _active_opt_outs(rt) == ["promotions"]


# ---- finding 9: web hardening ----------------------------------------------------------------


def _chunked_upload(client: TestClient, url: str, size: int) -> int:
    """POST a multipart file of `size` bytes with no Content-Length (chunked); the status."""

    def body() -> Iterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n'
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            yield chunk
        yield b"\r\n--B--\r\n"

    response = client.post(
        url, content=body(), headers={"content-type": "multipart/form-data; boundary=B"}
    )
    return response.status_code


def test_a_chunked_upload_is_cut_off_at_the_form_limit_as_it_streams(rt, client, make_contact):
    contact = make_contact()
    sent = [
        _chunked_upload(client, path, 2 * 1024 * 1024)
        for path in (f"/u/{_token(rt, contact)}", f"/preferences/{_token(rt, contact)}")
    ]
    assert sent == [413, 413]
    assert _active_opt_outs(rt) == []


def test_the_body_limit_counts_bytes_as_they_arrive() -> None:
    import asyncio

    from mailer.web.security import BodyLimitMiddleware

    read: list[int] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        while True:
            message = await receive()
            read.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    replies: list[dict] = []

    async def send(message):  # type: ignore[no-untyped-def]
        replies.append(message)

    scope = {"type": "http", "method": "POST", "path": "/u/x", "headers": []}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=4096)(scope, receive, send))
    assert sum(read) <= 4096 + 1000  # stopped at the limit, not at the end of the stream
    assert replies[0]["status"] == 413


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_nul_in_the_privacy_version_is_a_404_not_a_500(client) -> None:
    for path in ("/privacy/%00", "/privacy/1%00", "/privacy/" + "9" * 500):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_500_page_carries_the_security_headers_and_no_store(settings) -> None:
    down = settings.with_(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(down), base_url=BASE_URL, raise_server_exceptions=False) as broken:
        response = broken.get("/privacy")
    assert response.status_code == 500
    assert "Traceback" not in response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_the_rate_limit_counts_an_ipv6_slash_64_as_one_visitor() -> None:
    import asyncio

    from mailer.web.security import RateLimitMiddleware, SlidingWindowLimiter

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = RateLimitMiddleware(app, limiter=SlidingWindowLimiter(5, 60.0))

    def status(ip: str) -> int:
        sent: list[dict] = []

        async def send(message):  # type: ignore[no-untyped-def]
            sent.append(message)

        async def receive():  # type: ignore[no-untyped-def]
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "path": "/privacy", "headers": [], "client": (ip, 5000)}
        asyncio.run(middleware(scope, receive, send))
        return int(sent[0]["status"])

    statuses = [status(f"2001:db8:1:2:{n:x}::1") for n in range(1, 8)]
    assert statuses == [200] * 5 + [429, 429]
    assert status("2001:db8:1:3::1") == 200  # the next /64 is someone else
    assert status("::ffff:192.0.2.7") == 200 and status("192.0.2.8") == 200


def test_healthz_is_limited_and_does_not_query_the_database_per_request(rt) -> None:
    with TestClient(create_app(runtime=rt), base_url=BASE_URL) as c:
        statuses = [c.get("/healthz").status_code for _ in range(130)]
    assert statuses.count(429) > 0 and statuses[0] == 200


# ---- finding 9: served by uvicorn, as `uvicorn mailer.web:app` and `mailer serve` do ----------


@contextlib.contextmanager
def _uvicorn(config: uvicorn.Config) -> Iterator[int]:
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield config.port
    finally:
        server.should_exit = True
        thread.join(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_uvicorn_mailer_web_app_with_its_defaults_logs_no_token_and_trusts_no_forwarded_for(
    rt, settings, monkeypatch, make_contact
) -> None:
    import mailer.web as web

    # Given the module's app, served by uvicorn with uvicorn's own defaults
    monkeypatch.setenv("MAILER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(settings.templates_dir))
    monkeypatch.setenv("MAILER_SECRET_KEY", settings.secret_key.reveal())
    monkeypatch.setattr(web, "_app", None)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    access = logging.getLogger("uvicorn.access")
    token = _token(rt, make_contact())
    config = uvicorn.Config(web.app, host="127.0.0.1", port=_free_port(), log_level="info")
    access.addHandler(handler)
    try:
        with _uvicorn(config) as port:
            # When a visitor (or anyone on the box) claims another address in X-Forwarded-For
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/u/{token}",
                data=b"List-Unsubscribe=One-Click",
                headers={"X-Forwarded-For": "203.0.113.9"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
    finally:
        access.removeHandler(handler)
        monkeypatch.setattr(web, "_app", None)
    # Then the claimed address is not recorded, and the log has the request without its token
    with rt.sessions() as s:
        [row] = s.scalars(select(OptOut)).all()
    assert row.ip != "203.0.113.9"
    assert any("POST /u/" in line for line in lines), lines
    assert not any(token in line or token.split(".")[0] in line for line in lines), lines


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_client_trickling_its_headers_is_cut_off_at_the_header_timeout(rt) -> None:
    from mailer.web.server import uvicorn_config

    settings = rt.settings.with_(web_header_timeout_s=1.0)
    app = create_app(runtime=rt)
    config = uvicorn_config(app, settings, host="127.0.0.1", port=_free_port())
    with _uvicorn(config) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /privacy HTTP/1.1\r\nHost: x\r\n")
            closed_after = None
            for n in range(40):  # one header line every 0.2 s: 8 s if nobody stops it
                try:
                    sock.sendall(f"X-Slow-{n}: a\r\n".encode())
                    sock.settimeout(0.2)
                    if sock.recv(1024) == b"":
                        closed_after = time.monotonic() - started
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed_after = time.monotonic() - started
                    break
        # and an ordinary request on a fresh connection still works
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/privacy", timeout=5) as r:
            assert r.status == 200
    assert closed_after is not None and closed_after < 3.0
