"""The admin contact page and the API's contact changes over HTTP: one rule for a reason."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from mailer import access
from mailer.contacts.compliance import REASON_MAX_CHARS, REASON_MIN_CHARS
from mailer.models import OptOut
from mailer.runtime import Runtime
from tests.web_fixtures import csrf_of

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def test_the_reason_fields_take_the_cores_limits_and_a_short_reason_is_refused_everywhere(
    rt: Runtime, staff: Any, client_for: Any, make_contact: Any
) -> None:
    contact = make_contact()
    client = client_for("ada")
    page = client.get(f"/admin/contacts/{contact.id}").text
    limits = re.findall(r'name="reason" [^>]*minlength="(\d+)" maxlength="(\d+)"', page)
    assert limits and set(limits) == {(str(REASON_MIN_CHARS), str(REASON_MAX_CHARS))}
    # a browser without the HTML check (or a crafted post) gets the core's answer
    response = client.post(
        f"/admin/contacts/{contact.id}/opt-out",
        data={"csrf_token": csrf_of(page), "scope": "promotions", "reason": "no"},
    )
    assert response.status_code == 422
    assert f"write at least {REASON_MIN_CHARS} characters" in response.text
    with rt.sessions.begin() as s:
        ada = access.actor_for_username(s, "ada")
        token = access.create_api_token(s, ada, name="tests").token
    response = client.post(
        f"/api/v1/contacts/{contact.id}/suppress",
        json={"reason": "no"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "body.reason", "message": f"needs at least {REASON_MIN_CHARS} characters"}
    ]
    schema = client.get("/api/v1/openapi.json").json()
    body = schema["paths"]["/api/v1/contacts/{contact_id}/suppress"]["post"]["requestBody"]
    reason = body["content"]["application/json"]["schema"]["properties"]["reason"]
    assert (reason["minLength"], reason["maxLength"]) == (REASON_MIN_CHARS, REASON_MAX_CHARS)
    with rt.sessions() as s:
        assert s.scalars(select(OptOut)).first() is None


def test_a_more_link_or_contact_that_is_no_id_is_not_a_server_error(
    rt: Runtime, staff: Any, client_for: Any, make_contact: Any
) -> None:
    # "²" is a digit to str.isdigit but not to int(): the pages' id parsing raised (500)
    make_contact()
    client = client_for("mark")
    assert client.get("/admin/contacts?after=%C2%B2").status_code == 200
    assert client.get("/admin/campaigns?before=%C2%B2").status_code == 200


def test_a_nul_in_a_form_field_or_query_is_refused_by_name_not_a_server_error(
    rt: Runtime, staff: Any, client_for: Any, web_app: Any, make_contact: Any
) -> None:
    # PostgreSQL refuses NUL in any text: the sign-in form, a reason and a search were 500s
    contact = make_contact()
    with TestClient(web_app) as anonymous:
        login = anonymous.post("/admin/login", data={"username": "ada\x00", "password": "x"})
    assert login.status_code == 422
    assert "The field &#39;username&#39; holds a NUL character" in login.text
    client = client_for("ada")
    page = client.get(f"/admin/contacts/{contact.id}").text
    suppress = client.post(
        f"/admin/contacts/{contact.id}/suppress",
        data={"csrf_token": csrf_of(page), "reason": "asked by phone\x00 today"},
    )
    assert suppress.status_code == 422 and "&#39;reason&#39;" in suppress.text
    search = client.get("/admin/contacts?q=%00")
    assert search.status_code == 422 and "query parameter 'q' holds a NUL" in search.text


def test_the_audit_log_until_the_calendars_last_day_is_not_a_server_error(
    staff: Any, client_for: Any
) -> None:
    # "until" filters up to the next midnight, and 9999-12-31 has none (OverflowError: 500)
    client = client_for("ada")
    assert client.get("/admin/audit?until=9999-12-31").status_code == 200
    assert client.get("/admin/audit.csv?until=9999-12-31").status_code == 200


def test_a_contact_id_of_thousands_of_digits_is_not_found(staff: Any, client_for: Any) -> None:
    # Starlette's int convertor called int() on 5,000 digits, which Python refuses: a 500
    assert client_for("ada").get("/admin/contacts/" + "9" * 5000).status_code == 404
