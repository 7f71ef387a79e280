"""Your account and the users screen over HTTP: enrolling an authenticator app, requiring it of
every admin (and what an admin without one can still reach), resetting someone's."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mailer.access import totp
from mailer.models import AuditEvent, User
from mailer.runtime import Runtime
from tests.web_fixtures import PASSWORD, csrf_of

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def enroll(client: TestClient) -> str:
    """Enroll the signed-in user through the account page; returns the secret it showed."""
    token = csrf_of(client.get("/admin/account").text)
    page = client.post("/admin/account/totp", data={"csrf_token": token}).text
    match = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', page)
    assert match, "the account page shows the key while enrolling"
    secret = match.group(1)
    code = totp.code_at(secret, totp.step_at(time.time()) - 1)
    response = client.post("/admin/account/totp/confirm", data={"csrf_token": token, "code": code})
    assert "Two-step sign-in is on" in response.text
    assert secret not in response.text  # never shown again once on
    return secret


def audit(rt: Runtime, action: str) -> list[AuditEvent]:
    with rt.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_requiring_totp_needs_your_own_first_is_audited_and_lists_who_has_none(
    rt: Runtime, staff: Any, client_for: Any, make_user: Any, password_hash: str
) -> None:
    make_user(username="bea", role="admin", email="bea@cpi.example", password_hash=password_hash)
    client = client_for("ada")
    token = csrf_of(client.get("/admin/users").text)
    response = client.post(
        "/admin/settings/totp-required", data={"csrf_token": token, "required": "on"}
    )
    assert response.status_code == 422
    assert "set up your own authenticator app first" in response.text
    assert not audit(rt, "settings.change")
    secret = enroll(client)
    with rt.sessions() as s:
        stored = s.scalar(select(User.totp_secret).where(User.username == "ada")) or ""
    assert stored.startswith("v1:") and secret not in stored
    response = client.post(
        "/admin/settings/totp-required", data={"csrf_token": token, "required": "on"}
    )
    assert "Every admin now needs an authenticator app" in response.text
    assert "Not set up yet: bea" in response.text
    [change] = audit(rt, "settings.change")
    assert (change.actor, change.details["after"], change.details["admins_without_totp"]) == (
        "ada",
        True,
        ["bea"],
    )
    # ada cannot drop her own second factor while it is required
    response = client.post("/admin/users/ada/reset-totp", data={"csrf_token": token})
    assert response.status_code == 422 and "another admin can reset yours" in response.text
    response = client.post(
        "/admin/settings/totp-required", data={"csrf_token": token, "required": "off"}
    )
    assert "no longer need an authenticator app" in response.text
    assert [e.details["after"] for e in audit(rt, "settings.change")] == [True, False]


def test_an_enrolled_admin_signs_in_with_the_code_and_a_confined_one_is_sent_to_enroll(
    rt: Runtime, web_app: Any, staff: Any, client_for: Any, make_user: Any, password_hash: str
) -> None:
    make_user(username="bea", role="admin", email="bea@cpi.example", password_hash=password_hash)
    secret = enroll(client_for("ada"))
    with TestClient(web_app) as client:
        login = {"username": "ada", "password": PASSWORD, "next": "/admin/"}
        response = client.post("/admin/login", data=login, follow_redirects=False)
        assert response.status_code == 200 and "Authenticator code" in response.text
        code = totp.code_at(secret, totp.step_at(time.time()))
        response = client.post("/admin/login", data={**login, "code": code}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/admin/"
        token = csrf_of(client.get("/admin/users").text)
        client.post("/admin/settings/totp-required", data={"csrf_token": token, "required": "on"})
    with TestClient(web_app) as bea:
        login = {"username": "bea", "password": PASSWORD, "next": "/admin/users"}
        response = bea.post("/admin/login", data=login)
        assert str(response.url).endswith("/admin/account")
        assert "Admins must use an authenticator app" in response.text
        assert 'href="/admin/campaigns"' not in response.text  # no way out but enrolling
        token = csrf_of(response.text)
        # htmx requests are told where to go rather than given a page to swap in
        response = bea.post(
            "/admin/audience/count",
            data={"csrf_token": token, "category": "promotions", "rule": ""},
            headers={"hx-request": "true"},
        )
        assert response.status_code == 403 and response.headers["hx-redirect"] == "/admin/account"
        assert (
            "Set up your authenticator app"
            in bea.post(
                "/admin/tokens", data={"csrf_token": token, "name": "mine", "username": "bea"}
            ).text
        )
        enroll(bea)
        assert bea.get("/admin/users").status_code == 200


def test_an_admin_resets_a_users_second_factor_and_they_enroll_again(
    rt: Runtime, staff: Any, client_for: Any
) -> None:
    mark = client_for("mark")
    enroll(mark)
    admin = client_for("ada")
    page = admin.get("/admin/users").text
    assert 'action="/admin/users/mark/reset-totp"' in page
    response = admin.post("/admin/users/mark/reset-totp", data={"csrf_token": csrf_of(page)})
    assert "Second factor turned off" in response.text
    with rt.sessions() as s:
        user = s.scalars(select(User).where(User.username == "mark")).one()
        assert (user.totp_enabled, user.totp_secret) == (False, "")
    [event] = audit(rt, "totp.disable")
    assert (event.actor, event.object_id) == ("ada", "mark")
    assert "Set up an authenticator app" in mark.get("/admin/account").text
