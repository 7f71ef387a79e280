"""The admin app in a real browser (Debian's chromium under Playwright) against uvicorn,
PostgreSQL, Redis-fed worker threads and a capturing SMTP server.

Every screen visited is saved as a screenshot in test-artifacts/admin-*.png.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import func, select

from mailer.access import totp
from mailer.models import Campaign, Send
from mailer.runtime import Runtime
from mailer.web import create_app
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _free_port
from tests.web_fixtures import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def admin_url(mail_rt: Runtime, workers: Any) -> Iterator[str]:
    """The whole app under uvicorn on 127.0.0.1, launching into real worker threads."""
    port = _free_port()
    app = create_app(runtime=mail_rt, dispatch=workers.dispatch)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def sign_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/admin/")
    assert "/admin/login" in page.url  # anonymous: sent to the sign-in form
    shot(page, "login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def marketing_flow(page: Any, base_url: str, rt: Runtime, smtp: Any, *, js: bool) -> None:
    suffix = "" if js else "-nojs"
    sign_in(page, base_url, "mark")
    shot(page, f"dashboard{suffix}")
    page.get_by_role("link", name="New campaign").first.click()
    page.get_by_label("Name").fill("Open enrollment 2027")
    page.get_by_label("Category").select_option("promotions")
    page.get_by_label("Template").select_option("promotions/open-enrollment")
    # A typo in the rule: the error says where and suggests the fix
    page.get_by_label("Audience rule").fill('kind = client and stat = "OR"')
    if not js:
        page.get_by_role("button", name="Check audience").click()
    error = page.get_by_test_id("rule-error")
    error.wait_for()
    assert "column 19" in error.inner_text()
    assert "did you mean 'state'" in error.inner_text()
    shot(page, f"editor-rule-error{suffix}")
    page.get_by_label("Audience rule").fill('kind = client and state = "OR"')
    if not js:
        page.get_by_role("button", name="Check audience").click()
    count = page.get_by_test_id("audience-count")
    count.wait_for()
    assert "12 contacts will get this" in count.inner_text()
    shot(page, f"editor-count{suffix}")
    page.get_by_role("button", name="Create draft").click()
    page.get_by_text("Draft created").wait_for()
    page.get_by_role("link", name="Edit draft").click()
    page.get_by_role("heading", name="Edit draft").wait_for()
    shot(page, f"editor-draft{suffix}")
    page.get_by_role("button", name="Save draft").click()
    page.get_by_text("Draft saved.").wait_for()
    shot(page, f"campaign-draft{suffix}")
    # Preview as the first contact of the sample
    page.get_by_role("button", name="Preview").click()
    page.get_by_role("heading", name="Preview as").wait_for()
    assert "Subject" in page.get_by_test_id("headers").inner_text()
    assert "unsubscribe" in page.get_by_test_id("text-part").inner_text().lower()
    frame = page.frame_locator("iframe.mail")
    frame.get_by_text("Hello Pat").wait_for()  # the HTML part, rendered in its sandbox
    shot(page, f"preview{suffix}")
    page.go_back()
    # A test to myself: it arrives, marked, and is not in the send log
    before = len(smtp.messages)
    page.get_by_role("button", name="Send test").click()
    page.get_by_text("Test sent to mark@cpi.example").wait_for()
    shot(page, f"test-sent{suffix}")
    assert len(smtp.messages) == before + 1
    received = smtp.messages[-1]
    assert received.rcpt_tos == ["mark@cpi.example"]
    assert b"Subject: [TEST] " in received.data and b"X-Mailer-Test: yes" in received.data
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Send)) == 0
    # Launch after a confirmation that states the count
    page.get_by_role("link", name="Launch…").click()
    page.get_by_role("heading", name="Send to 12 contacts?").wait_for()
    shot(page, f"launch-confirm{suffix}")
    page.get_by_role("button", name="Send to 12 contacts").click()
    page.get_by_text("Tick the box to confirm").wait_for()  # nothing goes without the tick
    page.get_by_label("Yes, send").check()
    page.get_by_role("button", name="Send to 12 contacts").click()
    page.get_by_text("Launched: sending now.").wait_for()
    # Progress to the end: htmx polls; without JavaScript the user reloads
    deadline = time.monotonic() + 60
    while "completed" not in page.locator(".progress-block").inner_text().lower():
        if time.monotonic() > deadline:
            shot(page, "timeout")
            with rt.sessions() as s:
                rows = s.execute(select(Send.status, func.count()).group_by(Send.status)).all()
            raise AssertionError(f"the campaign did not complete within 60 s: {rows}")
        if not js:
            page.reload()
        time.sleep(0.5)
    assert "12 of 12 done" in page.locator(".progress-block").inner_text()
    shot(page, f"campaign-completed{suffix}")
    assert len(smtp.messages) == before + 1 + 12
    # The report and its CSV
    page.get_by_role("link", name="Report", exact=True).click()
    page.get_by_role("heading", name="Report: Open enrollment 2027").wait_for()
    shot(page, f"report{suffix}")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    path = download_info.value.path()
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"sent"}
    page.get_by_role("link", name="Campaigns").click()
    shot(page, f"campaigns{suffix}")


@pytest.fixture
def oregon_clients(make_org: Callable[..., Any], make_contact: Callable[..., Any]) -> None:
    for _ in range(12):
        make_contact(organization=make_org(kind="client", state="OR"))
    for _ in range(3):
        make_contact(organization=make_org(kind="client", state="WA"))
        make_contact(organization=make_org(kind="prospect", state="OR"))


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("js", [True, False], ids=["js", "no-js"])
def test_marketing_runs_a_whole_campaign_in_the_browser(
    js: bool,
    mail_rt: Runtime,
    admin_url: str,
    browser: Any,
    staff: Any,
    oregon_clients: None,
    smtp_server: Any,
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=js)
    page = context.new_page()
    page.set_default_timeout(15_000)
    marketing_flow(page, admin_url, mail_rt, smtp_server, js=js)
    [cookie] = context.cookies()
    assert (cookie["name"], cookie["path"], cookie["httpOnly"], cookie["sameSite"]) == (
        "mailer_admin",
        "/admin",
        True,
        "Lax",
    )
    assert cookie["expires"] == -1  # a session cookie: gone when the browser closes
    context.close()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_account_manager_sees_only_their_clients_and_cannot_create_a_promotion(
    mail_rt: Runtime,
    admin_url: str,
    browser: Any,
    staff: Any,
    make_org: Callable[..., Any],
    make_contact: Callable[..., Any],
) -> None:
    amy, otto = staff["account_manager"], staff["other_manager"]
    mine = [
        make_contact(
            organization=make_org(kind="client", name=f"Amy Client {n}", account_manager_id=amy.id)
        )
        for n in range(2)
    ]
    theirs = make_contact(
        organization=make_org(kind="client", name="Otto Client", account_manager_id=otto.id)
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, admin_url, "amy")
    # Contacts: only her clients', and another manager's contact is refused by URL too
    page.get_by_role("link", name="Contacts").click()
    text = page.locator("table").inner_text()
    assert "Amy Client 0" in text and "Amy Client 1" in text and "Otto Client" not in text
    shot(page, "contacts-account-manager")
    page.goto(f"{admin_url}/admin/contacts/{theirs.id}")
    page.get_by_role("heading", name="Not allowed").wait_for()
    page.goto(f"{admin_url}/admin/contacts/{mine[0].id}")
    page.get_by_role("heading", name="Send history").wait_for()
    shot(page, "contact")
    # The editor offers service mail only, and the server refuses a promotion forced in
    page.goto(f"{admin_url}/admin/campaigns/new")
    options = page.get_by_label("Category").locator("option").all_inner_texts()
    assert options == ["service"]
    page.evaluate(
        """() => {
        const add = (id, v) => { const o = document.createElement('option'); o.value = v;
          o.textContent = v; document.getElementById(id).appendChild(o); };
        add('category', 'promotions'); add('template', 'promotions/open-enrollment'); }"""
    )
    page.get_by_label("Name").fill("Sneaky promotion")
    page.get_by_label("Category").select_option("promotions")
    page.get_by_label("Template").select_option("promotions/open-enrollment")
    page.get_by_role("button", name="Create draft").click()
    page.get_by_text("promotions mail needs another role").first.wait_for()
    shot(page, "editor-refused-promotion")
    with mail_rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 0
    # A service notice to "every client" reaches her two clients, not Otto's
    page.goto(f"{admin_url}/admin/campaigns/new")
    page.get_by_label("Name").fill("Maintenance Saturday")
    page.get_by_label("Template").select_option("service/planned-maintenance")
    page.get_by_label("Audience rule").fill("kind = client")
    page.get_by_test_id("audience-count").wait_for()
    assert "2 contacts will get this" in page.get_by_test_id("audience-count").inner_text()
    context.close()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_admin_publishes_a_material_policy_version_and_downloads_its_coverage(
    mail_rt: Runtime,
    admin_url: str,
    browser: Any,
    staff: Any,
    make_org: Callable[..., Any],
    make_contact: Callable[..., Any],
    tmp_path: Path,
) -> None:
    for n in range(4):
        make_contact(organization=make_org(kind="client", name=f"Client {n}"))
    make_contact(organization=make_org(kind="prospect", name="Prospect"))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, admin_url, "ada")
    page.get_by_role("link", name="Policy").click()
    page.get_by_label("Version label").fill("2")
    page.get_by_label("Effective on").fill(dt.date.today().isoformat())
    page.get_by_label("What changed").fill("We now keep client information for five years.")
    page.get_by_label("Full text").fill("CPI privacy policy, version 2. We keep data five years.")
    page.get_by_label("Material change").check()
    shot(page, "policy")
    page.get_by_role("button", name="Publish version").click()
    page.get_by_text("Tick the box to confirm.").wait_for()  # nothing published without it
    page.get_by_label("I have checked the text and the date").check()
    page.get_by_role("button", name="Publish version").click()
    page.get_by_role("heading", name="Coverage of version 2").wait_for()
    deadline = time.monotonic() + 60
    while page.get_by_test_id("reached").inner_text() != "4":
        assert time.monotonic() < deadline, "the notice did not reach the 4 clients in 60 s"
        time.sleep(0.5)
        page.reload()
    shot(page, "coverage")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert sorted(r["name"] for r in rows) == [f"Client {n}" for n in range(4)]
    assert {r["is_reached"] for r in rows} == {"True"}
    # The other admin screens, for the record
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").fill("policy.")
    page.get_by_role("button", name="Filter").click()
    assert "policy.publish" in page.locator("table").inner_text()
    shot(page, "audit")
    page.get_by_role("link", name="Users").click()
    page.get_by_label("New token: what uses it").fill("crm-sync")
    page.get_by_role("button", name="Create token").click()
    assert "mlr_" in page.get_by_test_id("new-token").inner_text()  # shown once, here
    shot(page, "users")
    page.get_by_role("link", name="Contacts").click()
    shot(page, "contacts")
    page.get_by_role("link", name="Import CSV").click()
    upload = tmp_path / "new-clients.csv"
    upload.write_text(
        "external_id,kind,organization_name,email,first_name,last_name\r\n"
        "ORG-NEW-1,client,New Client Co,pat@newclient.example,Pat,Lee\r\n"
        "ORG-NEW-2,client,Other Co,not-an-address,Sam,Roe\r\n"
    )
    page.get_by_label("CSV file").set_input_files(str(upload))
    page.get_by_role("button", name="Check / import").click()
    page.get_by_text("Rows to fix").wait_for()
    shot(page, "import-dry-run")
    page.get_by_role("link", name="ada").click()
    page.get_by_role("button", name="Set up an authenticator app").click()
    secret = page.get_by_test_id("totp-secret").inner_text()
    shot(page, "account")
    page.get_by_label("Code from the app").fill(totp.code_at(secret, totp.step_at(time.time())))
    page.get_by_role("button", name="Turn on").click()
    page.get_by_text("Two-step sign-in is on").wait_for()
    assert secret not in page.content()  # the key is never shown again
    page.get_by_role("link", name="Users").click()
    page.get_by_role("button", name="Require it of every admin").click()
    page.get_by_text("Every admin now needs an authenticator app").wait_for()
    shot(page, "users-totp-required")
    page.get_by_role("link", name="Dashboard").click()
    shot(page, "dashboard-admin")
    context.close()


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("js", [True, False], ids=["js", "no-js"])
def test_marketing_writes_a_template_in_the_browser_and_a_campaign_sends_its_version(
    js: bool, mail_rt: Runtime, admin_url: str, browser: Any, staff: Any, smtp_server: Any
) -> None:
    suffix = "" if js else "-nojs"
    context = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=js)
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, admin_url, "mark")
    page.get_by_role("link", name="Templates").click()
    shot(page, f"templates{suffix}")
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Name").fill("promotions/spring-webinar")
    page.get_by_label("Subject").fill("Spring webinar for {{ organization.name }}")
    page.get_by_label("HTML content").fill("<p>Hello {{ contact.frist_name }}</p>")
    page.get_by_role("button", name="Check and save").click()
    # A typo: nothing saved, the problem shown at its line and column with the fix
    page.get_by_text("Nothing was saved").wait_for()
    beside = page.locator("#html-error-1").inner_text()
    assert beside.startswith("Line 1, column 21: unknown field 'contact.frist_name'")
    assert "did you mean 'first_name'?" in beside
    shot(page, f"template-error{suffix}")
    page.get_by_label("HTML content").fill("<p>Hello {{ contact.first_name }}</p>")
    page.get_by_role("button", name="Check and save").click()
    page.get_by_text("Saved as version 1.").wait_for()
    page.get_by_role("link", name="Edit (saves version 2)").click()
    page.get_by_label("HTML content").fill("<p>Hello {{ contact.first_name }}, see you soon.</p>")
    page.get_by_label("What changed").fill("a friendlier line")
    page.get_by_role("button", name="Check and save as version 2").click()
    page.get_by_text("Saved as version 2.").wait_for()
    assert "Changes from version 1" in page.content()
    shot(page, f"template-versions{suffix}")
    # The campaign editor offers it
    page.goto(f"{admin_url}/admin/campaigns/new")
    options = page.get_by_label("Template").locator("option").all_inner_texts()
    assert any(o.startswith("promotions/spring-webinar (stored v2)") for o in options)
    context.close()
