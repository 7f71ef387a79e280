"""The public web app over HTTP (Starlette TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_hypothesis
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.testclient import TestClient

from mailer.enums import Category
from mailer.models import AuditEvent, Contact, OptOut
from mailer.tokens import TokenSigner
from mailer.web import create_app
from mailer.web.security import SlidingWindowLimiter
from tests.delivery_fixtures import as_user
from tests.real_messages import build_promotion, unsubscribe_url

BASE_URL = "https://u.cpi.example"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0"


@pytest.fixture
def client(rt) -> Iterator[TestClient]:
    app = create_app(runtime=rt)
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as c:
        c.headers["user-agent"] = BROWSER_UA
        yield c


@pytest.fixture
def unlimited_client(rt) -> Iterator[TestClient]:
    """A client of an app with no rate limit, for tests that send many requests."""
    rt.settings = rt.settings.with_(web_rate_limit_per_minute=0)
    with TestClient(create_app(runtime=rt), base_url=BASE_URL) as c:
        yield c


@pytest.fixture
def token_for(rt) -> Callable[..., str]:
    signer = TokenSigner(rt.settings)

    def make(contact: Contact, category: str = "promotions", send_id: int = 0) -> str:
        return signer.make(contact.id, category, send_id)

    return make


def _opt_outs(rt) -> list[OptOut]:
    with rt.sessions() as s:
        return list(s.scalars(select(OptOut).order_by(OptOut.id)))


def _active_scopes(rt, contact: Contact) -> set[str]:
    return {o.category for o in _opt_outs(rt) if o.contact_id == contact.id and not o.revoked_at}


def _count(rt, model) -> int:
    with rt.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def _assert_no_redirect_no_cookie(response) -> None:
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers


def test_one_click_urlencoded_unsubscribes_from_the_tokens_category(
    rt, client, token_for, make_contact
):
    contact = make_contact()
    token = token_for(contact, "promotions", send_id=7)
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    _assert_no_redirect_no_cookie(response)
    assert "You are unsubscribed" in response.text
    [row] = _opt_outs(rt)
    assert (row.contact_id, row.category, row.source, row.send_id) == (
        contact.id,
        "promotions",
        "one_click",
        7,
    )
    assert (row.ip, row.user_agent) == ("testclient", BROWSER_UA)


def test_one_click_multipart_works_and_repeating_it_still_answers_200(
    rt, client, token_for, make_contact
):
    contact = make_contact()
    token = token_for(contact, "features")
    for _ in range(3):
        response = client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
        assert response.status_code == 200
        _assert_no_redirect_no_cookie(response)
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert [(o.category, o.source) for o in _opt_outs(rt)] == [("features", "one_click")]
    assert _count(rt, AuditEvent) == 1


def test_the_confirm_buttons_empty_post_is_recorded_as_the_confirm_page(
    rt, client, token_for, make_contact
):
    contact = make_contact()
    response = client.post(f"/u/{token_for(contact, 'service')}")
    assert response.status_code == 200
    assert [(o.category, o.source) for o in _opt_outs(rt)] == [("service", "confirm_page")]


def test_get_of_the_unsubscribe_link_changes_nothing(rt, client, token_for, make_contact):
    contact = make_contact(email="pat.smith@client.example")
    token = token_for(contact)
    response = client.get(f"/u/{token}")
    assert response.status_code == 200
    _assert_no_redirect_no_cookie(response)
    assert f'<form method="post" action="/u/{token}"' in response.text
    assert f'action="/preferences/{token}"' in response.text
    # the address is masked: enough to recognize, not to harvest
    assert "p••••@client.example" in response.text
    assert "pat.smith" not in response.text
    assert client.head(f"/u/{token}").status_code == 200
    assert _opt_outs(rt) == []
    assert _count(rt, AuditEvent) == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_tampered_forged_and_unknown_tokens_get_the_same_404_and_change_nothing(
    rt, client, token_for, make_contact, method
):
    contact = make_contact()
    good = token_for(contact)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    forged = TokenSigner(rt.settings.with_(secret_key=type(rt.settings.secret_key)("other"))).make(
        contact.id, "promotions"
    )
    unknown = token_for(Contact(id=987_654), "promotions")
    bodies = set()
    for bad in (tampered, forged, unknown, "not-a-token"):
        for path in (f"/u/{bad}", f"/preferences/{bad}"):
            data = {"List-Unsubscribe": "One-Click"} if method == "post" else None
            response = client.request(method.upper(), path, data=data)
            assert response.status_code == 404
            _assert_no_redirect_no_cookie(response)
            bodies.add(response.text)
    assert len(bodies) == 1
    assert client.get("/no/such/page").text in bodies
    assert _opt_outs(rt) == []
    assert _count(rt, AuditEvent) == 0


def test_a_contact_erased_after_the_mail_went_out_gets_the_404(rt, client, token_for, make_contact):
    contact = make_contact()
    token = token_for(contact)
    with rt.sessions.begin() as s:
        s.delete(s.get(Contact, contact.id))
    assert client.get(f"/u/{token}").status_code == 404
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert client.get(f"/preferences/{token}").status_code == 404
    assert _opt_outs(rt) == []


def _save(client, token: str, ticked: set[str]):
    form = {scope: "on" for scope in ticked}
    return client.post(f"/preferences/{token}", data={**form, "action": "save"})


def test_preferences_opt_out_of_promotions_and_back_in(rt, client, token_for, make_contact):
    contact = make_contact()
    token = token_for(contact, "features")
    # When the contact unticks promotions
    response = _save(client, token, {"all_marketing", "features", "service"})
    assert response.status_code == 200
    _assert_no_redirect_no_cookie(response)
    assert "Your preferences are saved." in response.text
    assert _active_scopes(rt, contact) == {"promotions"}
    assert (
        'id="pref-promotions" name="promotions" value="on" aria-describedby="hint-promotions">'
        in response.text
    )
    # Then ticks it again
    response = _save(client, token, {"all_marketing", "features", "promotions", "service"})
    assert _active_scopes(rt, contact) == set()
    [row] = _opt_outs(rt)
    assert row.source == "preferences" and row.revoked_at is not None
    with rt.sessions() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [(e.action, e.details["scope"], e.ip) for e in events] == [
        ("consent.opt_out", "promotions", "testclient"),
        ("consent.opt_in", "promotions", "testclient"),
    ]
    # Saving the same choices again changes nothing
    assert (
        "Nothing changed."
        in _save(client, token, {"all_marketing", "features", "promotions", "service"}).text
    )


def test_unsubscribe_from_all_marketing_and_back(rt, client, token_for, make_contact):
    contact = make_contact()
    token = token_for(contact, "policy")
    response = client.post(f"/preferences/{token}", data={"action": "unsubscribe_all"})
    assert response.status_code == 200
    assert _active_scopes(rt, contact) == {"all_marketing"}
    assert "Marketing email is off" in response.text
    _save(client, token, {"all_marketing", "features", "promotions", "service"})
    assert _active_scopes(rt, contact) == set()


def test_policy_is_shown_as_required_with_no_switch(rt, client, token_for, make_contact):
    contact = make_contact()
    token = token_for(contact, "policy")
    page = client.get(f"/preferences/{token}").text
    assert "Privacy-policy notices" in page and "Required" in page
    assert 'name="policy"' not in page
    # the unsubscribe page of a policy notice offers no confirm button, only preferences
    page = client.get(f"/u/{token}").text
    assert f'action="/u/{token}"' not in page
    assert f'action="/preferences/{token}"' in page
    # a one-click POST on a policy link changes nothing and says why
    response = client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert "These notices are required" in response.text
    # and a hand-made form field for policy is ignored
    client.post(
        f"/preferences/{token}",
        data={
            "action": "save",
            "policy": "",
            "all_marketing": "on",
            "features": "on",
            "promotions": "on",
            "service": "on",
        },
    )
    assert _opt_outs(rt) == []


def test_prospects_see_no_service_or_policy_choices(rt, client, token_for, make_contact, make_org):
    contact = make_contact(organization=make_org(kind="prospect"))
    page = client.get(f"/preferences/{token_for(contact)}").text
    assert 'name="features"' in page and 'name="promotions"' in page
    assert 'name="service"' not in page and "Privacy-policy notices" not in page


def test_a_preferences_post_without_an_action_is_refused_and_changes_nothing(
    rt, client, token_for, make_contact
):
    contact = make_contact()
    response = client.post(f"/preferences/{token_for(contact)}")
    assert response.status_code == 400
    assert _opt_outs(rt) == []


def test_behind_a_trusted_proxy_the_forwarded_ip_is_recorded(rt, make_contact):
    contact = make_contact()
    rt.settings = rt.settings.with_(trusted_proxy=True)
    token = TokenSigner(rt.settings).make(contact.id, "features")
    with TestClient(create_app(runtime=rt), base_url=BASE_URL) as c:
        c.post(f"/u/{token}", headers={"x-forwarded-for": "198.51.100.1, 192.0.2.9"})
        c.post(f"/u/{token}", headers={"x-forwarded-for": "<script>"})  # repeat: no new row
    assert [o.ip for o in _opt_outs(rt)] == ["192.0.2.9"]


def test_a_forwarded_value_that_is_not_an_address_falls_back_to_the_peer():
    from mailer.web.security import client_ip

    scope = {"type": "http", "client": ("10.0.0.5", 1234), "headers": []}
    for value, expected in (
        (b"2001:db8::1", "2001:db8::1"),
        (b"junk", "10.0.0.5"),
        (b"", "10.0.0.5"),
        (b"203.0.113.9 , 192.0.2.1", "192.0.2.1"),
    ):
        scope["headers"] = [(b"x-forwarded-for", value)]
        assert client_ip(scope, trusted_proxy=True) == expected
        assert client_ip(scope, trusted_proxy=False) == "10.0.0.5"


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(rt, client, token_for, make_contact):
    contact = make_contact()
    client.post(f"/u/{token_for(contact)}", headers={"x-forwarded-for": "192.0.2.9"})
    assert _opt_outs(rt)[0].ip == "testclient"


def test_the_privacy_page_shows_the_current_version_and_what_changed(rt, client):
    response = client.get("/privacy")
    assert response.status_code == 200
    assert "Version 1, effective January 1, 2026 (current)" in response.text
    assert "This is the first version." in response.text
    assert "132 Crowell Way" in response.text
    assert client.get("/privacy/1").status_code == 200
    assert client.get("/privacy/99").status_code == 404


def test_privacy_lists_changes_from_the_previous_version(rt, client):
    import datetime as dt

    from mailer.models import PolicyVersion
    from mailer.policy import text as policy_text

    with rt.sessions.begin() as s:
        policy_text.ensure_first_version(s)
        first = policy_text.get_version(s, "1")
        s.add(
            PolicyVersion(
                version="2",
                effective_on=first.effective_on + dt.timedelta(days=1),
                text=first.text.replace("seven (7) years", "five (5) years"),
                published_by="compliance",
            )
        )
    page = client.get("/privacy/2").text
    assert re.search(r"<del><span class=\"sr\">Removed: </span>[^<]*seven \(7\) years", page)
    assert re.search(r"<ins><span class=\"sr\">Added: </span>[^<]*five \(5\) years", page)
    assert 'href="/privacy/1"' in page


def test_healthz_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_every_public_response_has_security_headers_and_no_cookie(
    rt, client, token_for, make_contact
):
    contact = make_contact()
    token = token_for(contact)
    responses = [
        client.get(f"/u/{token}"),
        client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}),
        client.get(f"/preferences/{token}"),
        _save(client, token, {"features"}),
        client.get("/privacy"),
        client.get("/privacy/1"),
        client.get("/healthz"),
        client.get("/assets/web.css"),
        client.get("/u/bad"),
        client.put(f"/u/{token}"),
    ]
    for r in responses:
        assert "set-cookie" not in r.headers, r.url
        assert "location" not in r.headers, r.url
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert responses[0].headers["cache-control"] == "no-store"
    assert "script" not in responses[0].text.lower()


def test_the_rate_limit_answers_429_with_retry_after(rt, make_contact):
    rt.settings = rt.settings.with_(web_rate_limit_per_minute=3)
    with TestClient(create_app(runtime=rt), base_url=BASE_URL) as c:
        statuses = [c.get("/privacy").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = c.get("/u/anything")
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "set-cookie" not in limited.headers
        assert c.get("/healthz").status_code == 200  # health checks are not limited


def test_the_sliding_window_lets_hits_through_again_as_old_ones_age_out():
    now = [0.0]
    limiter = SlidingWindowLimiter(2, 60.0, clock=lambda: now[0])
    assert limiter.hit("a") == 0 and limiter.hit("a") == 0
    now[0] = 10.0
    assert limiter.hit("a") == pytest.approx(50.0)
    assert limiter.hit("b") == 0  # per key
    now[0] = 60.5
    assert limiter.hit("a") == 0


def test_category_in_the_token_decides_what_one_click_opts_out_of(
    rt, client, token_for, make_contact
):
    contact = make_contact()
    for category in (Category.FEATURES, Category.SERVICE):
        client.post(f"/u/{token_for(contact, category)}", data={"List-Unsubscribe": "One-Click"})
    assert _active_scopes(rt, contact) == {"features", "service"}


def _real_message_unsubscribe_url(settings, contact: Contact, send_id: int = 31) -> str:
    """The https URL in the List-Unsubscribe header of a real built promotion."""
    return unsubscribe_url(build_promotion(settings, contact, send_id=send_id))


def test_one_click_from_a_real_messages_header_keeps_the_contact_out_of_the_next_campaign(
    rt, client, make_contact
):
    import datetime as dt

    from mailer.rules import audience_select

    # Given a promotion built for a contact, with the public base URL the app serves
    rt.settings = rt.settings.with_(public_base_url=BASE_URL)
    contact = make_contact()
    url = _real_message_unsubscribe_url(rt.settings, contact)
    assert url.startswith(f"{BASE_URL}/u/")
    # When the mailbox provider POSTs the RFC 8058 one-click body to that URL
    response = client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    [row] = _opt_outs(rt)
    assert (row.category, row.source, row.send_id) == ("promotions", "one_click", 31)
    # Then the next promotion's audience skips the contact, and features still reach them
    today, now = dt.date.today(), dt.datetime.now(dt.UTC)
    with rt.sessions() as s:
        for category, reason in (("promotions", "opted_out"), ("features", None)):
            sel = audience_select(None, category, today=today, now=now)
            rows = {r.contact_id: r.skip_reason for r in s.execute(sel)}
            assert rows[contact.id] == reason


def test_an_oversized_form_is_refused_and_changes_nothing(rt, client, token_for, make_contact):
    contact = make_contact()
    response = client.post(f"/u/{token_for(contact)}", data={"x": "a" * 20_000})
    assert response.status_code == 413
    assert _opt_outs(rt) == []


#: What recipient tokens are made of (base64url and the dot).
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@pytest.mark.parametrize("backend", ["sqlite"])
@settings_hypothesis(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.text(alphabet=TOKEN_ALPHABET, min_size=3, max_size=120),
    position=st.integers(min_value=0),
    replacement=st.sampled_from(TOKEN_ALPHABET),
)
def test_no_made_up_or_altered_token_ever_unsubscribes_anyone(
    rt, unlimited_client, junk, position, replacement
):
    real = TokenSigner(rt.settings).make(1, "promotions", 1)
    i = position % len(real)
    altered = real[:i] + replacement + real[i + 1 :]
    for raw in (junk, altered):
        if raw == real:
            continue
        response = unlimited_client.post(f"/u/{raw}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404
    assert _opt_outs(rt) == []


def test_mailer_web_app_is_built_from_the_environment_on_first_access(settings, monkeypatch):
    import mailer.web as web

    monkeypatch.setenv("MAILER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MAILER_TEMPLATES_DIR", str(settings.templates_dir))
    monkeypatch.setattr(web, "_app", None)
    with TestClient(web.app, base_url=BASE_URL) as c:
        assert c.get("/healthz").json()["status"] == "ok"
    monkeypatch.setattr(web, "_app", None)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_mailer_serve_answers_on_the_given_port(settings, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE_URL=settings.database_url,
        MAILER_TEMPLATES_DIR=str(settings.templates_dir),
        MAILER_VAR_DIR=str(tmp_path / "var"),
    )
    mailer = Path(sys.executable).parent / "mailer"
    proc = subprocess.Popen(
        [str(mailer), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    assert "server" not in {k.lower() for k in r.headers}
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "mailer serve did not answer within 20 s"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_healthz_answers_503_when_the_database_is_down(settings):
    down = settings.with_(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(down), base_url=BASE_URL) as c:
        response = c.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "down"}


def test_one_click_in_a_delivered_message_stops_a_running_and_the_next_campaign(
    mail_rt, workers, people, make_audience, smtp_server
):
    from email import message_from_bytes, policy

    from mailer import campaigns
    from mailer.delivery import Batch
    from mailer.models import Send

    def create() -> int:
        return campaigns.create_campaign(
            mail_rt,
            actor=as_user(mail_rt, "mark"),
            name="Features",
            category="features",
            template="features/benefitelect-enrollment-site",
            rule_text="",
        ).id

    # Given a features campaign delivered to three contacts
    contacts = make_audience(3)
    first = create()
    campaigns.launch_campaign(
        mail_rt, first, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([first], timeout_s=60)
    [message] = [m for m in smtp_server.messages if contacts[0].email in m.rcpt_tos]
    header = message_from_bytes(message.data, policy=policy.default)["List-Unsubscribe"]
    [url] = re.findall(r"<(https://[^>]+)>", str(header))
    # And a second one planned but not yet sent
    running = create()
    held: list[Batch] = []
    campaigns.launch_campaign(
        mail_rt, running, actor=as_user(mail_rt, "mark"), dispatch=held.extend
    )

    # When the recipient's mailbox provider one-clicks the header's URL
    with TestClient(create_app(runtime=mail_rt), base_url=BASE_URL) as c:
        assert c.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    # Then the running campaign skips them at send time
    workers.dispatch(held)
    assert workers.run_until_finished([running], timeout_s=60)
    # And the next campaign skips them when it is planned
    later = create()
    summary = campaigns.launch_campaign(
        mail_rt, later, actor=as_user(mail_rt, "mark"), dispatch=workers.dispatch
    )
    assert workers.run_until_finished([later], timeout_s=60)
    with mail_rt.sessions() as s:
        rows = s.execute(
            select(Send.campaign_id, Send.status, Send.skip_reason).where(
                Send.contact_id == contacts[0].id
            )
        ).all()
    assert sorted(rows) == [
        (first, "sent", ""),
        (running, "skipped", "opted_out"),
        (later, "skipped", "opted_out"),
    ]
    assert summary.skip_reasons.get("opted_out") == 1
    sent_to = [m.rcpt_tos for m in smtp_server.messages]
    assert sum(contacts[0].email in r for r in sent_to) == 1
    assert sum(contacts[1].email in r for r in sent_to) == 3


def test_a_version_not_yet_in_force_says_which_one_applies_until_then(rt, client):
    import datetime as dt

    from mailer.models import PolicyVersion
    from mailer.policy import text as policy_text

    with rt.sessions.begin() as s:
        policy_text.ensure_first_version(s)
        s.add(
            PolicyVersion(
                version="2",
                effective_on=dt.date.today() + dt.timedelta(days=400),
                text="New text",
                published_by="compliance",
            )
        )
    assert "(current)" in client.get("/privacy/1").text
    upcoming = client.get("/privacy/2").text
    assert "It is not in force yet" in upcoming and 'href="/privacy/1"' in upcoming
    assert "Version 1, effective" in client.get("/privacy").text
