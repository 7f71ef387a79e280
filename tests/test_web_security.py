"""Hardening of the public web app: cross-site forms, body limits, error pages, proxies,
rate limits per network, slow clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
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
