"""Signing in and out of the admin app, and the API's tokens, over HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from mailer import access
from mailer.access import totp
from mailer.runtime import Runtime
from mailer.web import create_app
from tests.web_fixtures import PASSWORD, csrf_of

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def _login(client: TestClient, username: str, password: str = PASSWORD, **extra: str) -> Any:
    return client.post(
        "/admin/login",
        data={"username": username, "password": password, "next": "/admin/", **extra},
        follow_redirects=False,
    )


def test_the_session_cookie_is_http_only_lax_scoped_to_admin_and_dies_with_the_browser(
    rt: Runtime, staff: Any
) -> None:
    app = create_app(
        runtime=Runtime(
            rt.settings.with_(public_base_url="https://mail.cpi.example"), rt.engine, rt.sessions
        ),
        dispatch=lambda b: None,
    )
    with TestClient(app, base_url="https://testserver") as client:
        response = _login(client, "mark")
        assert response.status_code == 303 and response.headers["location"] == "/admin/"
        cookie = response.headers["set-cookie"]
        parts = {p.strip().split("=")[0].lower() for p in cookie.split(";")}
        assert cookie.startswith("mailer_admin=")
        assert {"httponly", "secure", "path", "samesite"} <= parts
        assert "samesite=lax" in cookie.lower() and "path=/admin" in cookie.lower()
        assert "max-age" not in parts and "expires" not in parts
        # the public pages set no cookie, and the admin cookie is never sent to them (path)
        assert "set-cookie" not in client.get("/privacy").headers


def test_a_wrong_password_says_so_and_repeated_failures_get_429_even_with_the_right_one(
    web_app: Any, staff: Any
) -> None:
    with TestClient(web_app) as client:
        response = _login(client, "mark", "wrong password")
        assert response.status_code == 401
        assert "Wrong username or password." in response.text
        assert _login(client, "nobody", "x").status_code == 401  # same answer for no such user
        for _ in range(4):
            _login(client, "mark", "wrong again")
        response = _login(client, "mark")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert "try again in" in response.text
        # another username from the same address is not locked out
        assert _login(client, "ada").status_code == 303


def test_signing_out_ends_the_session_on_the_server(web_app: Any, staff: Any) -> None:
    with TestClient(web_app) as client:
        _login(client, "mark")
        cookie = client.cookies["mailer_admin"]
        token = csrf_of(client.get("/admin/").text)
        assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 200
        # the old cookie, replayed, no longer signs anyone in
        client.cookies.set("mailer_admin", cookie, path="/admin")
        response = client.get("/admin/", follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith(
            "/admin/login"
        )


def test_signing_out_everywhere_ends_the_other_browsers_sessions(web_app: Any, staff: Any) -> None:
    with TestClient(web_app) as laptop, TestClient(web_app) as phone:
        _login(laptop, "mark")
        _login(phone, "mark")
        token = csrf_of(laptop.get("/admin/account").text)
        laptop.post("/admin/logout-everywhere", data={"csrf_token": token})
        assert phone.get("/admin/", follow_redirects=False).status_code == 303


def test_a_disabled_user_is_signed_out_at_once(rt: Runtime, web_app: Any, staff: Any) -> None:
    with TestClient(web_app) as client:
        _login(client, "mark")
        assert client.get("/admin/campaigns").status_code == 200
        with rt.sessions.begin() as s:
            access.disable_user(s, access.actor_for_username(s, "ada"), "mark")
        assert client.get("/admin/campaigns", follow_redirects=False).status_code == 303


def test_a_user_with_an_authenticator_needs_the_code_as_a_second_step(
    rt: Runtime, web_app: Any, staff: Any
) -> None:
    with rt.sessions.begin() as s:
        mark = access.actor_for_username(s, "mark")
        secret = totp.begin_enrollment(s, mark, settings=rt.settings)
        code = totp.code_at(secret, totp.step_at(time.time()))
        totp.confirm_enrollment(s, mark, code, settings=rt.settings)
    with TestClient(web_app) as client:
        response = _login(client, "mark")
        assert response.status_code == 200 and "Authenticator code" in response.text
        assert "mailer_admin" not in client.cookies
        response = _login(client, "mark", code="000000")
        assert "that code is wrong" in response.text.lower()
        code = totp.code_at(secret, totp.step_at(time.time()) + 1)  # the next code is accepted
        response = _login(client, "mark", code=code)
        assert response.status_code == 303, response.text


def test_sign_in_never_redirects_to_another_site(web_app: Any, staff: Any) -> None:
    with TestClient(web_app) as client:
        for target in ("https://evil.example/", "//evil.example/", "/admin/\\evil"):
            response = client.post(
                "/admin/login",
                data={"username": "mark", "password": PASSWORD, "next": target},
                follow_redirects=False,
            )
            assert response.headers["location"] == "/admin/", target


def test_a_revoked_token_is_refused_at_once(rt: Runtime, web_app: Any, staff: Any) -> None:
    with rt.sessions.begin() as s:
        ada = access.actor_for_username(s, "ada")
        created = access.create_api_token(s, ada, name="ci", username="mark")
    headers = {"authorization": f"Bearer {created.token}"}
    with TestClient(web_app) as client:
        assert client.get("/api/v1/campaigns", headers=headers).status_code == 200
        with rt.sessions.begin() as s:
            access.revoke_token(s, access.actor_for_username(s, "ada"), created.info.public_id)
        response = client.get("/api/v1/campaigns", headers=headers)
        assert response.status_code == 401
        assert response.json()["title"] == "Authentication required"
