"""Stored templates: every save a checked, immutable version; campaigns pin the version they
launch with and keep a snapshot of what they sent; workers render the pinned version."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import shutil
from collections import Counter, OrderedDict
from email.policy import default as default_policy
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select, update
from starlette.testclient import TestClient

from mailer import campaigns, policy, reports, template_store
from mailer.cli import main
from mailer.delivery import Batch
from mailer.errors import PermissionDeniedError, TemplateCheckError, TemplateError
from mailer.messages import CampaignInfo, CampaignMessages, SenderIdentity
from mailer.messages.context import SAMPLE_RECIPIENT
from mailer.messages.templates import TemplateSource
from mailer.models import (
    AuditEvent,
    Campaign,
    CampaignSnapshot,
    Send,
    StoredTemplate,
    TemplateVersion,
)
from mailer.runtime import Runtime
from mailer.template_store import choose_source, pinning, store
from mailer.web import create_app
from tests.conftest import ROOT
from tests.delivery_fixtures import as_user
from tests.web_fixtures import PASSWORD, csrf_of

NAME = "promotions/spring-webinar"
HTML = (
    "<h1>Spring webinar for {{ organization.name }}</h1>\n"
    "<p>Hello {{ contact.first_name }}, join us on {{ params.date }}.</p>\n"
)


def _save(rt: Runtime, user: str = "mark", **kw: Any) -> template_store.VersionInfo:
    values: dict[str, Any] = {
        "name": NAME,
        "subject": "Spring webinar on {{ params.date }}",
        "html": HTML,
        "params": "date",
    }
    return template_store.save_version(rt, as_user(rt, user), **{**values, **kw})


def _webinar(rt: Runtime) -> Campaign:
    """Mark's draft promotion made from the stored template NAME."""
    return campaigns.create_campaign(
        rt,
        actor=as_user(rt, "mark"),
        name="Webinar",
        category="promotions",
        template=NAME,
        params={"date": "March 3"},
    )


def _versions(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.scalar(select(func.count()).select_from(TemplateVersion)) or 0


def test_every_save_is_a_new_immutable_version_with_author_and_hash(
    rt: Runtime, staff: Any
) -> None:
    first = _save(rt)
    second = _save(rt, subject="Spring webinar: {{ params.date }}", note="shorter", base_version=1)
    assert (first.number, second.number) == (1, 2)
    assert first.content_hash != second.content_hash and len(second.content_hash) == 64
    with rt.sessions() as s:
        info, versions = template_store.get_stored(s, as_user(rt, "mark"), NAME)
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "template.save")).all()
    assert [v.number for v in versions] == [2, 1] and info.latest == versions[0]
    assert versions[1].subject == "Spring webinar on {{ params.date }}"  # the old one unchanged
    assert (versions[0].author, versions[0].note) == ("mark", "shorter")
    assert [e.details["version"] for e in events] == [1, 2]
    # the same content again is not a new version
    with pytest.raises(TemplateError, match="nothing changed since version 2"):
        _save(rt, subject="Spring webinar: {{ params.date }}", note="again")
    # a new template cannot take an existing one's name
    with pytest.raises(TemplateError, match="exists already"):
        _save(rt, subject="Other", base_version=0)
    # an editor working from version 1 cannot overwrite version 2 unseen
    with pytest.raises(TemplateError, match="version 2 was saved by mark after the version 1"):
        _save(rt, subject="Other", base_version=1)
    assert _versions(rt) == 2


def test_a_failing_save_saves_nothing_and_names_every_problem_with_line_and_column(
    rt: Runtime, staff: Any
) -> None:
    html = (
        "<p>Hello {{ contact.frist_name }}</p>\n"
        "<p>{{ organisation.name }} on {{ params.dat }}</p>\n"
    )
    with pytest.raises(TemplateCheckError) as caught:
        _save(rt, html=html, subject="Hi {{ contact.lastname }}")
    fields = template_store.error_fields(caught.value)
    assert {
        "field": "html",
        "message": "unknown field 'contact.frist_name'; did you mean 'first_name'?",
        "line": 1,
        "column": 21,
    } in fields
    assert any(
        f["field"] == "html" and f["line"] == 2 and "did you mean 'organization'" in str(f)
        for f in fields
    )
    assert any("did you mean 'params.date'" in str(f["message"]) for f in fields)
    assert any(f["field"] == "subject" and "last_name" in str(f["message"]) for f in fields)
    assert _versions(rt) == 0
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(StoredTemplate)) == 0


def test_the_save_check_is_the_template_checks_footer_and_name_rules(
    rt: Runtime, staff: Any
) -> None:
    # HTML left open that would swallow the footer is refused, as for a built-in template
    with pytest.raises(TemplateError, match=r"CSS inlining|HTML parser|footer"):
        _save(rt, html=HTML + "<textarea>\n")
    # a policy notice carries no promotion (admins only edit policy templates)
    with pytest.raises(TemplateError, match="promotional content") as caught:
        _save(
            rt,
            "ada",
            name="policy/short-notice",
            subject="Upgrade now",
            html="<p>{{ params.summary }}</p>",
            params="summary",
        )
    assert template_store.error_fields(caught.value)[0]["field"] == "subject"
    with pytest.raises(TemplateCheckError) as caught:
        _save(rt, name="promotions/open-enrollment")
    assert "built-in template" in str(caught.value)
    with pytest.raises(TemplateError, match="does not start with a category"):
        _save(rt, name="spring/x")
    assert _versions(rt) == 0


def test_who_may_edit_follows_the_roles_and_refusals_are_audited(rt: Runtime, staff: Any) -> None:
    with pytest.raises(PermissionDeniedError, match="marketing"):
        _save(rt, "amy")
    with pytest.raises(PermissionDeniedError, match="needs the role admin"):
        _save(rt, "mark", name="service/outage", html="<p>{{ contact.first_name }}</p>")
    _save(
        rt,
        "ada",
        name="service/outage",
        subject="Outage tonight",
        html="<p>Hi {{ contact.first_name }}</p>",
        params="",
    )
    amy, mark = as_user(rt, "amy"), as_user(rt, "mark")
    with rt.sessions() as s:
        # an account manager sees service templates but marketing does not
        amy_sees = [i.name for i in template_store.list_stored(s, amy)]
        mark_sees = [i.name for i in template_store.list_stored(s, mark)]
        with pytest.raises(PermissionDeniedError):
            template_store.get_stored(s, mark, "service/outage")
    with rt.sessions() as s:
        denied = s.scalars(select(AuditEvent).where(AuditEvent.action == "denied")).all()
    actions = [d.details["action"] for d in denied]
    assert actions == ["template.edit", "template.edit", "template.view"]
    assert (amy_sees, mark_sees) == (["service/outage"], [])


def test_launch_pins_the_latest_version_and_writes_the_snapshot(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    make_contact()
    _save(rt)
    _save(rt, html=HTML + "<p>Version two.</p>\n", base_version=1)
    mark = as_user(rt, "mark")
    campaign = _webinar(rt)
    assert campaign.template_id is not None and campaign.template_version_id is None
    campaigns.launch_campaign(rt, campaign.id, actor=mark, dispatch=None)
    with rt.sessions() as s:
        launched = s.get(Campaign, campaign.id)
        pinned = s.get(TemplateVersion, launched.template_version_id)
        snapshot = s.get(CampaignSnapshot, campaign.id)
        csv_text = "".join(reports.report_csv(s, campaign.id))
    assert pinned.number == 2
    assert snapshot.template_version == 2 and snapshot.template == NAME
    assert snapshot.subject_source == "Spring webinar on {{ params.date }}"
    assert snapshot.sample_subject == "Spring webinar on March 3"
    assert "Version two." in snapshot.sample_html and "Version two." in snapshot.html_source
    assert "Example Health Partners" in snapshot.sample_text  # the documented sample contact
    assert snapshot.content_hash == pinned.content_hash
    header, row = csv_text.splitlines()[:2]
    assert header.endswith("template,template_version") and row.endswith(f"{NAME},v2")


def test_a_campaign_subject_overrides_the_template_subject_and_is_checked(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    make_contact()
    mark = as_user(rt, "mark")
    with pytest.raises(TemplateError, match="campaign subject, line 1, column 12"):
        campaigns.create_campaign(
            rt,
            actor=mark,
            name="Own subject",
            category="promotions",
            template="promotions/aca-reporting",
            subject="Hi from {{ organisation.name }}",
        )
    campaign = campaigns.create_campaign(
        rt,
        actor=mark,
        name="Own subject",
        category="promotions",
        template="promotions/aca-reporting",
        subject="News for {{ organization.name }}",
    )
    campaigns.launch_campaign(rt, campaign.id, actor=mark, dispatch=None)
    with rt.sessions() as s:
        snapshot = s.get(CampaignSnapshot, campaign.id)
    assert snapshot.template_version is None  # a built-in template
    assert snapshot.sample_subject == "News for Example Health Partners"


def test_workers_render_the_pinned_version_after_a_newer_one_is_saved(
    mail_rt: Runtime, workers: Any, staff: Any, make_contact: Any, smtp_server: Any
) -> None:
    for n in range(6):
        make_contact(email=f"pat{n}@client.example")
    _save(mail_rt)
    mark = as_user(mail_rt, "mark")
    cid = _webinar(mail_rt).id
    held: list[Batch] = []
    campaigns.launch_campaign(mail_rt, cid, actor=mark, dispatch=held.extend)
    # Given a newer version is saved after the launch, When the batches are worked
    _save(mail_rt, subject="Changed after launch", base_version=1)
    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "template_versions" in statement:
            reads.append(statement)

    event.listen(mail_rt.engine, "before_cursor_execute", count)
    try:
        workers.dispatch(held)
        assert workers.run_until_finished([cid], timeout_s=60)
    finally:
        event.remove(mail_rt.engine, "before_cursor_execute", count)
    # Then every message is the pinned version 1
    subjects = {
        email.message_from_bytes(m.data, policy=default_policy)["Subject"]
        for m in smtp_server.messages
    }
    assert len(smtp_server.messages) == 6 and subjects == {"Spring webinar on March 3"}
    # and the version's source was read at most once by this process, never per message
    assert len(reads) <= 1


@pytest.fixture
def client(rt: Runtime, staff: Any, smtp_server: Any) -> Any:
    settings = rt.settings.with_(smtp_url=smtp_server.url, smtp_local_hostname="mailer.test")
    app = create_app(
        runtime=Runtime(settings, rt.engine, rt.sessions), dispatch=lambda batches: None
    )
    clients: list[TestClient] = []

    def sign_in(username: str) -> tuple[TestClient, str]:
        c = TestClient(app)
        clients.append(c)
        page = c.post("/admin/login", data={"username": username, "password": PASSWORD})
        return c, csrf_of(page.text)

    yield sign_in
    for c in clients:
        c.close()


def test_the_editor_saves_versions_and_shows_each_problem_inline_without_saving(
    rt: Runtime, client: Any
) -> None:
    web, token = client("mark")
    form = {
        "csrf_token": token,
        "name": NAME,
        "subject": "Webinar {{ params.date }}",
        "params": "date",
        "html": "<p>{{ contact.frist_name }}</p>\n<p>{{ params.dat }}</p>",
        "text": "",
        "note": "",
        "base_version": "",
    }
    response = web.post("/admin/templates", data=form)
    assert response.status_code == 422
    assert "Nothing was saved" in response.text
    assert "Line 1, column 15: unknown field &#39;contact.frist_name&#39;" in response.text
    assert "Line 2, column 14" in response.text and _versions(rt) == 0
    form["html"] = HTML
    response = web.post("/admin/templates", data=form)
    assert response.status_code == 200 and "Saved as version 1." in response.text
    edit = web.get(f"/admin/templates/{NAME}/edit")
    assert 'name="base_version" value="1"' in edit.text
    form.update(html=HTML + "<p>More.</p>", base_version="1", note="more")
    page = web.post("/admin/templates", data=form)
    assert "Saved as version 2." in page.text and "+&lt;p&gt;More.&lt;/p&gt;" in page.text
    old = web.get(f"/admin/templates/{NAME}?version=1")
    assert "Version 1" in old.text and "More." not in old.text.split("Version 1")[1]
    listing = web.get("/admin/templates")
    assert NAME in listing.text and "stored v2" in listing.text
    # a built-in template is copied into the editor as a starting point
    copy = web.get("/admin/templates/new?from=promotions/aca-reporting")
    assert 'value="promotions/aca-reporting-copy"' in copy.text and "{#" not in copy.text
    assert web.get("/admin/templates/new?from=service/planned-maintenance").status_code == 403
    # an account manager may not open the editor
    amy, _ = client("amy")
    assert amy.get("/admin/templates/new").status_code == 403


def test_the_campaign_editor_offers_stored_templates_and_a_subject(
    rt: Runtime, client: Any, make_contact: Any
) -> None:
    make_contact()
    _save(rt)
    web, token = client("mark")
    page = web.get("/admin/campaigns/new")
    assert f'value="{NAME}"' in page.text and 'name="subject"' in page.text
    response = web.post(
        "/admin/campaigns",
        data={
            "csrf_token": token,
            "name": "From the browser",
            "category": "promotions",
            "template": "promotions/aca-reporting",
            "subject": "For {{ organization.name }}",
            "rule": "",
        },
    )
    assert response.status_code == 200
    with rt.sessions() as s:
        campaign = s.scalars(select(Campaign).where(Campaign.name == "From the browser")).one()
    assert campaign.subject == "For {{ organization.name }}"
    web.post(f"/admin/campaigns/{campaign.id}/launch", data={"csrf_token": token, "confirm": "yes"})
    report = web.get(f"/admin/campaigns/{campaign.id}/report")
    assert "What was sent" in report.text and "For Example Health Partners" in report.text
    sample = web.get(f"/admin/campaigns/{campaign.id}/sample.html")
    assert sample.status_code == 200 and "sandbox" in sample.headers["content-security-policy"]


def test_the_api_lists_gets_and_saves_versions_with_problem_details(
    rt: Runtime, staff: Any, smtp_server: Any
) -> None:
    from mailer import access

    with rt.sessions.begin() as s:
        ada = access.actor_for_username(s, "ada", via="web")
        tokens = {
            u: access.create_api_token(s, ada, name="t", username=u).token for u in ("mark", "amy")
        }
    app = create_app(runtime=rt, dispatch=lambda batches: None)
    with TestClient(app) as api:
        mark = {"authorization": f"Bearer {tokens['mark']}"}
        url = f"/api/v1/templates/stored/{NAME}/versions"
        bad = api.post(url, headers=mark, json={"subject": "Hi", "html": "{{ contact.emial }}"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0] == {
            "field": "html",
            "message": "unknown field 'contact.emial'; did you mean 'email'?",
            "line": 1,
            "column": 12,
        }
        saved = api.post(
            url,
            headers=mark,
            json={"subject": "Hi {{ contact.first_name }}", "html": HTML, "params": "date"},
        )
        assert saved.status_code == 201 and saved.json()["version"] == 1
        got = api.get(f"/api/v1/templates/stored/{NAME}", headers=mark).json()
        assert [v["version"] for v in got["versions"]] == [1] and got["versions"][0]["html"] == HTML
        names = {
            t["name"]: t["kind"] for t in api.get("/api/v1/templates", headers=mark).json()["items"]
        }
        assert names[NAME] == "stored v1" and names["promotions/aca-reporting"] == "built-in"
        amy = {"authorization": f"Bearer {tokens['amy']}"}
        assert api.post(url, headers=amy, json={"subject": "x", "html": "y"}).status_code == 403
        assert api.get(f"/api/v1/templates/stored/{NAME}", headers=amy).status_code == 403
        assert api.get("/api/v1/templates/stored/promotions/nope", headers=mark).status_code == 404


def test_the_cli_saves_a_version_from_a_file_and_lists_versions(
    rt: Runtime, staff: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "MAILER_DATABASE_URL": rt.settings.database_url,
        "MAILER_SECRET_KEY": rt.settings.secret_key.reveal(),
        "MAILER_TEMPLATES_DIR": str(rt.settings.templates_dir),
        "MAILER_VAR_DIR": str(tmp_path / "var"),
        "MAILER_USER": "mark",
    }.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "webinar.html"
    path.write_text(
        "{#\nsubject: Webinar on {{ params.date }}\ncategory: promotions\nparams: date\n#}\n"
        + HTML
        + "<p>{{ contact.nmae }}</p>\n"
    )
    runner = CliRunner()
    failed = runner.invoke(main, ["template", "save", NAME, "--html", str(path)])
    assert failed.exit_code != 0
    assert f"{path}, line 8, column 15: unknown field 'contact.nmae'" in failed.output
    path.write_text(path.read_text().replace("{{ contact.nmae }}", "Bye"))
    saved = runner.invoke(main, ["template", "save", NAME, "--html", str(path), "--json"])
    assert saved.exit_code == 0, saved.output
    listed = runner.invoke(main, ["template", "versions", NAME])
    assert listed.output.startswith("v1 ") and "mark" in listed.output
    stored = runner.invoke(main, ["template", "stored", "--json"])
    assert NAME in stored.output


def test_a_policy_notice_keeps_its_snapshot_for_the_coverage_report(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    make_contact()
    report = policy.publish_policy(
        rt,
        version="2",
        effective_on=dt.date(2027, 1, 1),
        text="Version 2.",
        summary="We keep logs for seven years.",
        is_material=True,
        actor=as_user(rt, "ada"),
        dispatch=None,
    )
    with rt.sessions() as s:
        summary = template_store.snapshot_of(s, report.campaign_id)
        snapshot = s.get(CampaignSnapshot, report.campaign_id)
    assert summary is not None and summary["template"] == "policy/privacy-policy-change"
    assert summary["template_version_label"] == "built-in"
    assert "We keep logs for seven years." in snapshot.sample_text


def counting_compilations(monkeypatch: pytest.MonkeyPatch) -> list[TemplateSource]:
    """Empty this process's cache of compiled templates (tests share one process) and list
    every source compiled from now on."""
    monkeypatch.setattr(pinning, "_compiled", OrderedDict())
    compiled: list[TemplateSource] = []
    compile_template = pinning.compile_template

    def counting(settings: Any, source: TemplateSource, *, subject: str = "") -> Any:
        compiled.append(source)
        return compile_template(settings, source, subject=subject)

    monkeypatch.setattr(pinning, "compile_template", counting)
    return compiled


def test_a_worker_compiles_each_pinned_version_once_and_a_newly_pinned_one_anew(
    mail_rt: Runtime,
    workers: Any,
    staff: Any,
    make_contact: Any,
    smtp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (caches of its own: sources and compiled templates are kept per process, and the tests'
    # databases, emptied between tests, number their versions from 1 again)
    monkeypatch.setattr(store, "_sources", OrderedDict())
    compiled = counting_compilations(monkeypatch)
    for n in range(50):  # three batches of 20: both worker threads get some
        make_contact(email=f"pat{n}@client.example")
    mark = as_user(mail_rt, "mark")
    # Given a campaign pinned to version 1, and one launched after version 2 was saved
    _save(mail_rt)
    first = _webinar(mail_rt).id
    campaigns.launch_campaign(mail_rt, first, actor=mark, dispatch=workers.dispatch)
    assert workers.run_until_finished([first], timeout_s=60)
    _save(mail_rt, subject="Version two on {{ params.date }}", base_version=1)
    second = _webinar(mail_rt).id
    campaigns.launch_campaign(mail_rt, second, actor=mark, dispatch=workers.dispatch)
    assert workers.run_until_finished([second], timeout_s=60)
    # When the first campaign's batches come back (a resend, a retried batch)
    with mail_rt.sessions.begin() as s:
        s.execute(update(Send).where(Send.campaign_id == first).values(status="queued"))
        s.execute(update(Campaign).where(Campaign.id == first).values(status="sending"))
    workers.tick()
    assert workers.run_until_finished([first], timeout_s=60)

    # Then each campaign went out in its own pinned version
    subjects = Counter(
        email.message_from_bytes(m.data, policy=default_policy)["Subject"]
        for m in smtp_server.messages
    )
    assert subjects == Counter({"Spring webinar on March 3": 100, "Version two on March 3": 50})
    # and the worker threads compiled each version once between them (two threads, three runs)
    assert sorted(c.html_file for c in compiled) == [f"{NAME} v1.html", f"{NAME} v2.html"]


def test_a_compiled_template_is_kept_until_its_source_its_subject_or_the_layout_changes(
    settings: Any, tmp_path: Any
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    own = settings.with_(templates_dir=templates)
    source = choose_source(None, own, "promotions/aca-reporting").source
    kept = template_store.compiled_template(own, source)
    assert template_store.compiled_template(own, source) is kept
    assert template_store.compiled_template(own, source, subject="Other") is not kept
    changed = dataclasses.replace(source, html=source.html + "<p>More.</p>\n")
    assert template_store.compiled_template(own, changed) is not kept
    # When the layout file changes on disk (a deploy), the template is compiled again with it
    layout = templates / "layouts" / "base.html"
    layout.write_text(layout.read_text().replace("<title>", "<title>Layout two: "))
    again = template_store.compiled_template(own, source)
    assert again is not kept and template_store.compiled_template(own, source) is again
    assert "Layout two: " in _sample_html(own, again)


def _sample_html(settings: Any, template: Any) -> str:
    messages = CampaignMessages(
        settings,
        template=template,
        campaign=CampaignInfo(id=1, name="c", category=template.category),
        sender=SenderIdentity("Dana Reyes", "dana@cpi.example", "541-555-0142"),
        params={},
    )
    return messages.render_parts(SAMPLE_RECIPIENT)[2]
