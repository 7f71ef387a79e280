"""A real browser (Debian's chromium under Playwright) against the app served by uvicorn."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from mailer.models import OptOut, PolicyVersion
from mailer.policy import text as policy_text
from mailer.tokens import TokenSigner
from mailer.web import create_app
from tests.real_messages import build_promotion, unsubscribe_url
from tests.required_tools import require

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base_url(rt) -> Iterator[str]:
    """The app under uvicorn on 127.0.0.1, in a thread, for the length of one test."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(runtime=rt), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
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
def page():  # type: ignore[no-untyped-def]
    require(str(CHROMIUM))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 900, "height": 1000})
        yield context.new_page()
        assert context.cookies() == []  # the public pages set no cookies
        context.close()
        browser.close()


def _unsubscribe_url_of_a_real_message(settings, contact) -> str:  # type: ignore[no-untyped-def]
    message = build_promotion(settings, contact, send_id=12, campaign_id=3)
    return unsubscribe_url(message, scheme="http")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_recipient_confirms_the_unsubscribe_in_a_real_browser(rt, base_url, page, make_contact):
    # Given a contact and the unsubscribe link of a promotion they received
    contact = make_contact(email="pat.smith@client.example")
    url = _unsubscribe_url_of_a_real_message(rt.settings.with_(public_base_url=base_url), contact)
    assert url.startswith(f"{base_url}/u/")
    # When they open the link: nothing changes yet
    page.goto(url)
    assert page.get_by_role("heading", level=1).inner_text() == "Unsubscribe from promotions?"
    with rt.sessions() as s:
        assert s.scalars(select(OptOut)).all() == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "unsubscribe.png"), full_page=True)
    # And they press the confirm button
    page.get_by_role("button", name="Unsubscribe", exact=True).click()
    # Then they see the confirmation and the opt-out is recorded
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    page.screenshot(path=str(ARTIFACTS / "unsubscribed.png"))
    with rt.sessions() as s:
        [row] = s.scalars(select(OptOut)).all()
    assert (row.category, row.source, row.ip, row.send_id) == (
        "promotions",
        "confirm_page",
        "127.0.0.1",
        12,
    )
    assert "Chrome" in row.user_agent
    # And the preference page shows promotions off, every box labelled
    page.get_by_role("link", name="Change your email preferences").click()
    assert not page.get_by_label("Promotions").is_checked()
    assert page.get_by_label("Feature explanations").is_checked()
    page.screenshot(path=str(ARTIFACTS / "preferences.png"), full_page=True)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_recipient_opts_back_in_with_the_keyboard(rt, base_url, page, make_contact):
    contact = make_contact()
    token = TokenSigner(rt.settings).make(contact.id, "features")
    page.goto(f"{base_url}/preferences/{token}")
    page.get_by_role("button", name="Unsubscribe from all marketing").click()
    page.get_by_text("Marketing email is off").wait_for()
    page.get_by_label("Marketing email").focus()
    page.keyboard.press("Space")
    page.keyboard.press("Tab")  # the focus ring is visible: see test-artifacts/focus.png
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "focus.png"))
    page.get_by_role("button", name="Save preferences").focus()
    page.keyboard.press("Enter")
    page.get_by_text("Your preferences are saved.").wait_for()
    assert page.get_by_label("Marketing email").is_checked()
    with rt.sessions() as s:
        [row] = s.scalars(select(OptOut)).all()
    assert row.category == "all_marketing" and row.revoked_at is not None
    # The policy page of a second version shows what changed from the first
    with rt.sessions.begin() as s:
        policy_text.ensure_first_version(s)
        first = policy_text.get_version(s, "1")
        s.add(
            PolicyVersion(
                version="2",
                effective_on=first.effective_on + dt.timedelta(days=30),
                text=first.text.replace("seven (7) years", "five (5) years"),
                summary="We now keep client information for five years instead of seven.",
                published_by="compliance",
            )
        )
    page.goto(f"{base_url}/privacy/2")
    assert page.get_by_role("deletion").text_content().startswith("Removed: We store client")
    page.screenshot(path=str(ARTIFACTS / "privacy.png"))
