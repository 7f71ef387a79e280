"""Every route of the admin app and the API, called as every role, read from the app's router.

anonymous → the sign-in page (HTML) or 401 (API); a role the route does not allow → 403;
an allowed role → success. A route added without an entry in EXAMPLES fails the test, so none
can be left out.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from mailer import access, campaigns, policy, template_store
from mailer.access import totp
from mailer.enums import Role
from mailer.models import Campaign, Contact, OptOut, Send, User
from mailer.runtime import Runtime
from mailer.web import create_app
from mailer.web.guard import allowed_roles, allowed_while_enrolling
from tests.web_fixtures import PASSWORD, csrf_of

#: Routes anyone may call (the sign-in form, static files, the API's description).
PUBLIC = {
    ("GET", "/admin/login"),
    ("POST", "/admin/login"),
    ("GET", "/api/v1/openapi.json"),
}

ROLE_USERS = {Role.ADMIN: "ada", Role.MARKETING: "mark", Role.ACCOUNT_MANAGER: "amy"}


def app_routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, full path, endpoint) of every admin and API route, in router order."""
    found = []
    for mount in app.routes:
        if not isinstance(mount, Mount) or mount.path not in ("/admin", "/api/v1"):
            continue
        for route in mount.routes:
            if isinstance(route, Route):
                for method in sorted((route.methods or set()) - {"HEAD"}):
                    found.append((method, mount.path + route.path, route.endpoint))
    return found


IMPORT_CSV = (
    "external_id,kind,organization_name,email,first_name,last_name\r\n"
    "ORG-NEW-1,client,New Client Co,pat@newclient.example,Pat,Lee\r\n"
)

#: How to call each route successfully: form fields (admin) or JSON (API), with {cid} for the
#: acting user's own campaign and {contact} for one of its contacts.
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/admin/logout"): {"form": {}, "last": True},
    ("POST", "/admin/logout-everywhere"): {"form": {}, "last": True},
    ("GET", "/admin/"): {},
    ("GET", "/admin/account"): {},
    ("POST", "/admin/account/totp"): {"form": {}},
    ("POST", "/admin/account/totp/confirm"): {"form": {"code": "{totp}"}},
    ("GET", "/admin/campaigns"): {},
    ("GET", "/admin/campaigns/new"): {},
    ("POST", "/admin/campaigns"): {
        "form": {"name": "Another", "category": "{category}", "template": "{template}", "rule": ""}
    },
    ("POST", "/admin/audience/count"): {
        "form": {"category": "{category}", "rule": "kind = client"}
    },
    ("GET", "/admin/campaigns/{campaign_id:id}"): {},
    ("GET", "/admin/campaigns/{campaign_id:id}/edit"): {},
    ("POST", "/admin/campaigns/{campaign_id:id}/edit"): {
        "form": {"name": "Renamed", "template": "{template}", "rule": "kind = client"}
    },
    ("GET", "/admin/campaigns/{campaign_id:id}/progress"): {},
    ("GET", "/admin/campaigns/{campaign_id:id}/preview"): {"query": "?contact={contact}"},
    ("GET", "/admin/campaigns/{campaign_id:id}/preview.html"): {"query": "?contact={contact}"},
    ("POST", "/admin/campaigns/{campaign_id:id}/test-send"): {
        "form": {"contact": "{contact}", "to": "me@cpi.example"}
    },
    ("GET", "/admin/campaigns/{campaign_id:id}/launch"): {},
    ("POST", "/admin/campaigns/{campaign_id:id}/launch"): {
        "form": {"when": "now", "confirm": "yes"}
    },
    ("POST", "/admin/campaigns/{campaign_id:id}/pause"): {"form": {}},
    ("POST", "/admin/campaigns/{campaign_id:id}/resume"): {"form": {}},
    ("POST", "/admin/campaigns/{campaign_id:id}/cancel"): {"form": {}},
    ("GET", "/admin/campaigns/{campaign_id:id}/report"): {},
    ("GET", "/admin/campaigns/{campaign_id:id}/report.csv"): {},
    ("GET", "/admin/campaigns/{campaign_id:id}/sample.html"): {},
    ("GET", "/admin/templates"): {},
    ("GET", "/admin/templates/new"): {},
    ("POST", "/admin/templates"): {
        "form": {
            "name": "promotions/from-the-routes",
            "subject": "Hello {{ contact.first_name }}",
            "params": "",
            "html": "<p>Hello {{ contact.first_name }}</p>",
            "text": "",
            "note": "first",
            "base_version": "",
        }
    },
    ("GET", "/admin/templates/{category}/{name}"): {"query": "?version=1"},
    ("GET", "/admin/templates/{category}/{name}/edit"): {},
    ("GET", "/admin/contacts"): {"query": "?q=example"},
    ("GET", "/admin/contacts/import"): {},
    ("POST", "/admin/contacts/import"): {
        "form": {"dry_run": "yes"},
        "files": {"file": ("new.csv", IMPORT_CSV, "text/csv")},
    },
    ("GET", "/admin/contacts/{contact_id:id}"): {},
    ("POST", "/admin/contacts/{contact_id:id}/opt-out"): {
        "form": {"scope": "promotions", "reason": "asked by phone"}
    },
    ("POST", "/admin/contacts/{contact_id:id}/suppress"): {"form": {"reason": "asked by phone"}},
    ("POST", "/admin/contacts/{contact_id:id}/unsuppress"): {
        "form": {"reason": "address works again"}
    },
    ("GET", "/admin/policy"): {},
    ("POST", "/admin/policy"): {
        "form": {
            "version": "3",
            "effective_on": "2099-01-01",
            "summary": "Clearer wording.",
            "text": "The new text.",
            "confirm": "yes",
        }
    },
    ("GET", "/admin/policy/{version}/coverage"): {},
    ("GET", "/admin/policy/{version}/coverage.csv"): {},
    ("POST", "/admin/policy/{version}/resend"): {"form": {}},
    ("GET", "/admin/audit"): {"query": "?actor=ada&action=campaign."},
    ("GET", "/admin/audit.csv"): {"query": "?object=campaign:1"},
    ("GET", "/admin/users"): {},
    ("POST", "/admin/users/{username}/role"): {"form": {"role": "marketing"}},
    ("POST", "/admin/users/{username}/disable"): {"form": {}},
    ("POST", "/admin/users/{username}/enable"): {"form": {}},
    ("POST", "/admin/users/{username}/password"): {"form": {"password": "another long password"}},
    ("POST", "/admin/users/{username}/logout-everywhere"): {"form": {}},
    ("POST", "/admin/users/{username}/reset-totp"): {"form": {}},
    ("POST", "/admin/settings/totp-required"): {"form": {"required": "off"}},
    ("POST", "/admin/tokens"): {"form": {"name": "crm-sync", "username": "otto", "expires": "30"}},
    ("POST", "/admin/tokens/{public_id}/revoke"): {"form": {}},
    ("POST", "/admin/users"): {
        "form": {
            "username": "newbie",
            "display_name": "New Bie",
            "email": "newbie@cpi.example",
            "role": "marketing",
            "password": "a long first password",
        }
    },
}

API = "/api/v1"
#: How to call each API route successfully (JSON bodies; the same placeholders).
API_EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", f"{API}/campaigns"): {"query": "?limit=5"},
    ("POST", f"{API}/campaigns"): {
        "json": {"name": "By API", "category": "{category}", "template": "{template}"}
    },
    ("GET", f"{API}/campaigns/{{campaign_id:id}}"): {},
    ("PATCH", f"{API}/campaigns/{{campaign_id:id}}"): {
        "json": {"name": "Renamed", "template": "{template}", "rule": "kind = client"}
    },
    ("POST", f"{API}/campaigns/{{campaign_id:id}}/preview"): {"json": {"contact_id": "{contact}"}},
    ("POST", f"{API}/campaigns/{{campaign_id:id}}/test-send"): {
        "json": {"contact_id": "{contact}", "to": ["me@cpi.example"]}
    },
    ("POST", f"{API}/campaigns/{{campaign_id:id}}/launch"): {"json": {}},
    ("POST", f"{API}/campaigns/{{campaign_id:id}}/pause"): {},
    ("POST", f"{API}/campaigns/{{campaign_id:id}}/resume"): {},
    ("POST", f"{API}/campaigns/{{campaign_id:id}}/cancel"): {},
    ("GET", f"{API}/campaigns/{{campaign_id:id}}/report"): {},
    ("GET", f"{API}/campaigns/{{campaign_id:id}}/report.csv"): {},
    ("POST", f"{API}/audiences/check"): {"json": {"rule": "kind = client"}},
    ("POST", f"{API}/audiences/count"): {"json": {"category": "{category}", "rule": ""}},
    ("GET", f"{API}/templates"): {},
    ("GET", f"{API}/templates/stored/{{category}}/{{name}}"): {},
    ("POST", f"{API}/templates/stored/{{category}}/{{name}}/versions"): {
        "json": {"subject": "Version two for {{ contact.first_name }}", "html": "<p>Two</p>"}
    },
    ("GET", f"{API}/contacts"): {"query": "?q=example&limit=10"},
    ("POST", f"{API}/contacts/import"): {"query": "?dry_run=true", "csv": True},
    ("GET", f"{API}/contacts/{{contact_id:id}}"): {},
    ("POST", f"{API}/contacts/{{contact_id:id}}/opt-out"): {
        "json": {"scope": "promotions", "reason": "asked by phone"}
    },
    ("POST", f"{API}/contacts/{{contact_id:id}}/suppress"): {"json": {"reason": "asked by phone"}},
    ("POST", f"{API}/contacts/{{contact_id:id}}/unsuppress"): {"json": {"reason": "works again"}},
    ("GET", f"{API}/policy/versions"): {},
    ("POST", f"{API}/policy/versions"): {
        "json": {
            "version": "4",
            "effective_on": "2099-02-01",
            "summary": "Clearer wording.",
            "text": "The new text.",
            "is_material": False,
        }
    },
    ("GET", f"{API}/policy/versions/{{version}}/coverage"): {},
    ("POST", f"{API}/policy/versions/{{version}}/resend"): {},
    ("GET", f"{API}/audit/events"): {"query": "?action=campaign.&limit=5"},
    ("GET", f"{API}/users"): {},
    ("POST", f"{API}/users"): {
        "json": {
            "username": "apinew",
            "display_name": "Api New",
            "email": "apinew@cpi.example",
            "role": "marketing",
            "password": "a long first password",
        }
    },
    ("PATCH", f"{API}/users/{{username}}"): {"json": {"role": "marketing"}},
    ("GET", f"{API}/tokens"): {},
    ("POST", f"{API}/tokens"): {"json": {"name": "crm-sync", "username": "otto"}},
    ("POST", f"{API}/tokens/{{public_id}}/revoke"): {},
}

#: The category and template each role's own campaign uses.
OWN_CAMPAIGN = {
    Role.ADMIN: ("promotions", "promotions/open-enrollment"),
    Role.MARKETING: ("promotions", "promotions/open-enrollment"),
    Role.ACCOUNT_MANAGER: ("service", "service/planned-maintenance"),
}


@pytest.fixture
def routed_app(rt: Runtime, smtp_server: Any) -> Any:
    settings = rt.settings.with_(smtp_url=smtp_server.url, smtp_local_hostname="mailer.test")
    return create_app(
        runtime=Runtime(settings, rt.engine, rt.sessions), dispatch=lambda batches: None
    )


@pytest.fixture
def world(rt: Runtime, staff: Any, make_org: Any, make_contact: Any) -> dict[Role, dict[str, Any]]:
    """For each role: its own draft campaign and a contact it may preview as."""
    with rt.sessions() as s:
        actors = {name: access.actor_for_username(s, name) for name in ROLE_USERS.values()}
    policy.publish_policy(
        rt,
        version="2",
        effective_on=dt.date.today(),
        text="Version 2 of the policy.",
        summary="We share less.",
        is_material=True,
        actor=actors["ada"],
        dispatch=None,
    )
    with rt.sessions.begin() as s:
        ada = access.actor_for_username(s, "ada", via="web")
        otto_token = access.create_api_token(s, ada, name="to revoke", username="otto")
        bearer = {
            role: access.create_api_token(s, ada, name="tests", username=name).token
            for role, name in ROLE_USERS.items()
        }
    stored = {}
    for category in ("promotions", "service"):
        stored[category] = template_store.save_version(
            rt,
            actors["ada"],
            name=f"{category}/routed",
            subject="Routed {{ contact.first_name }}",
            html="<p>Hello {{ contact.first_name }}</p>",
        ).template
    out: dict[Role, dict[str, Any]] = {}
    for role, username in ROLE_USERS.items():
        category, template = OWN_CAMPAIGN[role]
        manager = staff["account_manager"] if role == Role.ACCOUNT_MANAGER else None
        org = make_org(kind="client", account_manager_id=manager.id if manager else None)
        contact = make_contact(organization=org)
        campaign = campaigns.create_campaign(
            rt,
            actor=actors[username],
            name=f"{role} campaign",
            category=category,
            template=template,
        )
        out[role] = {
            "totp": _CurrentCode(rt, username),
            "bearer": bearer[role],
            "public_id": otto_token.info.public_id,
            "cid": campaign.id,
            "contact": str(contact.id),
            "category": category,
            "template": template,
            "stored": stored[category],
        }
    return out


class _CurrentCode:
    """The code a user's authenticator app would show now (read when the form is filled)."""

    def __init__(self, rt: Runtime, username: str) -> None:
        self.rt, self.username = rt, username

    def __str__(self) -> str:
        with self.rt.sessions() as s:
            user = s.scalars(select(User).where(User.username == self.username)).one()
            secret = totp.stored_secret(user, self.rt.settings)  # sealed in the database
        return totp.code_at(secret, totp.step_at(time.time()))


def _fill(value: str, values: dict[str, Any]) -> str:
    for key, v in values.items():
        value = value.replace("{" + key + "}", str(v))
    return value


def _url(path: str, values: dict[str, Any]) -> str:
    return (
        path.replace("{campaign_id:id}", str(values["cid"]))
        .replace("{contact_id:id}", str(values["contact"]))
        .replace("{version}", "2")
        .replace("{username}", "otto")
        .replace("{public_id}", values["public_id"])
        .replace("{category}/{name}", values["stored"])
    )


@pytest.fixture
def signed_in(routed_app: Any) -> Iterator[Callable[[str], tuple[TestClient, str]]]:
    clients: list[TestClient] = []

    def make(username: str) -> tuple[TestClient, str]:
        client = TestClient(routed_app)
        clients.append(client)
        response = client.post(
            "/admin/login", data={"username": username, "password": PASSWORD, "next": "/admin/"}
        )
        assert response.status_code == 200, response.text
        return client, csrf_of(response.text)

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_route_is_declared_with_its_roles_and_an_example(routed_app: Any) -> None:
    for method, path, endpoint in app_routes(routed_app):
        if (method, path) in PUBLIC or path.startswith("/admin/assets"):
            assert allowed_roles(endpoint) is None, f"{method} {path} should be public"
            continue
        assert allowed_roles(endpoint), f"{method} {path} has no allow(...) roles"
        examples = EXAMPLES if path.startswith("/admin") else API_EXAMPLES
        assert (method, path) in examples, f"add an example call for {method} {path}"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_anonymous_callers_are_sent_to_sign_in_or_get_401(routed_app: Any, world: Any) -> None:
    values = world[Role.ADMIN]
    with TestClient(routed_app) as client:
        for method, path, endpoint in app_routes(routed_app):
            if allowed_roles(endpoint) is None:
                continue
            url = _url(path, values)
            response = client.request(method, url, follow_redirects=False)
            if path.startswith("/api/"):
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.headers["content-type"] == "application/problem+json"
            else:
                assert response.status_code == 303, (method, path, response.status_code)
                assert response.headers["location"].startswith("/admin/login"), (method, path)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("role", list(ROLE_USERS), ids=[r.value for r in ROLE_USERS])
def test_each_role_gets_what_it_may_and_403_for_the_rest(
    role: Role, routed_app: Any, world: Any, signed_in: Any
) -> None:
    client, token = signed_in(ROLE_USERS[role])
    values = world[role]
    last = []
    for method, path, endpoint in app_routes(routed_app):
        roles = allowed_roles(endpoint)
        if roles is None or not path.startswith("/admin"):
            continue
        example = EXAMPLES[(method, path)]
        if example.get("last"):
            last.append((method, path, roles))
            continue
        _call_and_check(client, token, method, path, roles, role, values, example)
    for method, path, roles in last:  # signing out ends the session: do it at the end
        _call_and_check(client, token, method, path, roles, role, values, EXAMPLES[(method, path)])


def _call_and_check(
    client: TestClient,
    token: str,
    method: str,
    path: str,
    roles: frozenset[Role],
    role: Role,
    values: dict[str, Any],
    example: dict[str, Any],
) -> None:
    url = _url(path, values) + _fill(example.get("query", ""), values)
    form = {k: _fill(v, values) for k, v in example.get("form", {}).items()}
    if method == "POST":
        form["csrf_token"] = token
    response = client.request(
        method,
        url,
        data=form if method == "POST" else None,
        files=example.get("files"),
        follow_redirects=False,
    )
    if role not in roles:
        assert response.status_code == 403, (role, method, path, response.status_code)
    else:
        assert response.status_code in (200, 201, 303), (role, method, path, response.text[:800])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_form_post_without_the_session_token_is_refused(
    routed_app: Any, world: Any, signed_in: Any
) -> None:
    client, token = signed_in("mark")
    cid = world[Role.MARKETING]["cid"]
    response = client.post(f"/admin/campaigns/{cid}/cancel", data={"csrf_token": "0" * 64})
    assert response.status_code == 403
    response = client.post(f"/admin/campaigns/{cid}/cancel", data={})
    assert response.status_code == 403
    # and one from another site is refused before the token is even read
    response = client.post(
        f"/admin/campaigns/{cid}/cancel",
        data={"csrf_token": token},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert response.status_code == 403
    assert client.get(f"/admin/campaigns/{cid}").text.count("draft") >= 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_account_manager_cannot_open_a_marketing_campaign(world: Any, signed_in: Any) -> None:
    client, _ = signed_in("amy")
    cid = world[Role.MARKETING]["cid"]
    assert client.get(f"/admin/campaigns/{cid}").status_code == 403
    assert client.get(f"/admin/campaigns/{cid}/report.csv").status_code == 403
    listing = client.get("/admin/campaigns").text
    assert "marketing campaign" not in listing and "account_manager campaign" in listing


def _typed(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        filled = _fill(value, values)
        return int(filled) if value == "{contact}" else filled
    if isinstance(value, list):
        return [_typed(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v, values) for k, v in value.items()}
    return value


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("role", list(ROLE_USERS), ids=[r.value for r in ROLE_USERS])
def test_each_role_gets_what_it_may_from_the_api_and_403_for_the_rest(
    role: Role, routed_app: Any, world: Any
) -> None:
    values = world[role]
    headers = {"authorization": f"Bearer {values['bearer']}"}
    with TestClient(routed_app) as client:
        for method, path, endpoint in app_routes(routed_app):
            roles = allowed_roles(endpoint)
            if roles is None or not path.startswith(API):
                continue
            example = API_EXAMPLES[(method, path)]
            url = _url(path, values) + _fill(example.get("query", ""), values)
            extra: dict[str, Any] = {}
            if "json" in example:
                extra["json"] = _typed(example["json"], values)
            if example.get("csv"):
                extra["content"] = IMPORT_CSV
                extra["headers"] = {**headers, "content-type": "text/csv"}
            response = client.request(method, url, headers=extra.pop("headers", headers), **extra)
            if role not in roles:
                assert response.status_code == 403, (role, method, path, response.text)
                assert response.headers["content-type"] == "application/problem+json"
            else:
                assert 200 <= response.status_code < 300, (role, method, path, response.text)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_wrong_method_names_every_method_the_path_takes(routed_app: Any) -> None:
    with TestClient(routed_app) as client:
        response = client.delete("/api/v1/campaigns")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, POST"
        assert response.headers["content-type"] == "application/problem+json"
        response = client.put("/admin/campaigns")
        assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD, POST")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_api_path_the_mount_cannot_match_still_answers_problem_json(routed_app: Any) -> None:
    # found by schemathesis: a line feed in a path segment kept the request out of the API's
    # mount, and the public site's HTML 404 answered
    with TestClient(routed_app) as client:
        for path in ("/api/v1/templates/stored/q%0A/x/versions", "/api/v1/no-such-thing"):
            response = client.post(path, json={})
            assert response.status_code in (401, 404), (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_draft_is_edited_with_the_same_checks_and_a_launched_one_is_not(
    world: Any, signed_in: Any
) -> None:
    client, token = signed_in("mark")
    cid = world[Role.MARKETING]["cid"]
    form = {"csrf_token": token, "name": "Spring", "template": "promotions/open-enrollment"}
    response = client.post(f"/admin/campaigns/{cid}/edit", data={**form, "rule": "kindd = client"})
    assert response.status_code == 422
    assert "did you mean &#39;kind&#39;" in response.text  # shown inline, nothing saved
    assert "Spring" not in client.get(f"/admin/campaigns/{cid}").text
    response = client.post(f"/admin/campaigns/{cid}/edit", data={**form, "rule": "kind = client"})
    assert "Draft saved." in response.text and "Spring" in response.text
    client.post(f"/admin/campaigns/{cid}/launch", data={"csrf_token": token, "confirm": "yes"})
    response = client.get(f"/admin/campaigns/{cid}/edit")
    assert response.status_code == 409 and "only a draft" in response.text


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_launch_is_scheduled_in_the_zone_chosen_and_a_time_that_does_not_exist_is_refused(
    rt: Runtime, world: Any, signed_in: Any
) -> None:
    client, token = signed_in("mark")
    cid = world[Role.MARKETING]["cid"]
    form = {"csrf_token": token, "confirm": "yes", "when": "later"}
    gap = {**form, "at": "2099-03-08T02:30", "zone": "America/Los_Angeles"}  # clocks skip it
    response = client.post(f"/admin/campaigns/{cid}/launch", data=gap)
    assert response.status_code == 422 and "the clocks skip that hour" in response.text
    ok = {**form, "at": "2099-01-05T09:00", "zone": "America/New_York"}
    response = client.post(f"/admin/campaigns/{cid}/launch", data=ok)
    assert "Scheduled." in response.text
    with rt.sessions() as s:
        campaign = s.get(Campaign, cid)
        assert campaign.status == "scheduled"
        assert campaign.scheduled_at == dt.datetime(2099, 1, 5, 14, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_import_dry_run_changes_nothing_and_the_good_rows_go_in_when_asked(
    rt: Runtime, world: Any, signed_in: Any
) -> None:
    client, token = signed_in("ada")
    text = IMPORT_CSV + "ORG-NEW-2,client,Other Co,not-an-address,Sam,Roe\r\n"
    files = {"file": ("new.csv", text, "text/csv")}

    def post(**form: str) -> Any:
        return client.post(
            "/admin/contacts/import", data={"csrf_token": token, **form}, files=files
        )

    def imported() -> bool:
        with rt.sessions() as s:
            return (
                s.scalar(select(Contact.id).where(Contact.email == "pat@newclient.example"))
                is not None
            )

    response = post(dry_run="yes")
    assert response.status_code == 422
    assert "not-an-address" in response.text and "Import the good rows" in response.text
    assert not imported()
    response = post(skip_invalid="yes")
    assert response.status_code == 200 and "Imported" in response.text
    assert imported()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_dashboard_lists_recent_bounces_opt_outs_and_complaints(
    rt: Runtime, world: Any, signed_in: Any, make_contact: Any
) -> None:
    cid = world[Role.MARKETING]["cid"]
    people = [make_contact(email=f"person{n}@client.example") for n in range(3)]
    with rt.sessions.begin() as s:
        sends = [
            Send(
                campaign_id=cid,
                contact_id=p.id,
                organization_id=p.organization_id,
                category="promotions",
                email=p.email,
                status=status,
                smtp_code=code,
                smtp_reply=reply,
            )
            for p, (status, code, reply) in zip(
                people,
                [("failed", 550, "5.1.1 no such user"), ("sent", 250, ""), ("sent", 250, "")],
                strict=True,
            )
        ]
        s.add_all(sends)
        s.flush()
        for send, source in ((sends[1], "one_click"), (sends[2], "complaint")):
            s.add(
                OptOut(
                    contact_id=send.contact_id,
                    address_hash="h",
                    category="promotions",
                    source=source,
                    send_id=send.id,
                )
            )
    client, _ = signed_in("mark")
    page = client.get("/admin/").text
    assert "person0@client.example" in page and "550 5.1.1 no such user" in page
    assert "promotions via one click" in page and "promotions via complaint" in page


@pytest.mark.parametrize("backend", ["sqlite"])
def test_api_lists_page_by_cursor_and_bad_input_names_the_field(
    routed_app: Any, world: Any
) -> None:
    headers = {"authorization": f"Bearer {world[Role.ADMIN]['bearer']}"}
    with TestClient(routed_app) as client:
        seen: list[int] = []
        url = "/api/v1/campaigns?limit=2"
        while url:
            page = client.get(url, headers=headers).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            url = f"/api/v1/campaigns?limit=2&cursor={cursor}" if cursor else ""
        assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) >= 3
        response = client.get("/api/v1/campaigns?limit=500", headers=headers)
        assert response.status_code == 422
        assert response.json()["errors"] == [{"field": "limit", "message": "must be at most 100"}]
        response = client.post(
            "/api/v1/campaigns",
            headers=headers,
            json={
                "name": "X",
                "category": "promotions",
                "template": "promotions/aca-reporting",
                "rule": "employees > ten",
            },
        )
        assert response.status_code == 422
        [error] = response.json()["errors"]
        assert error["field"] == "rule" and error["line"] == 1 and error["column"] == 13


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_admin_takes_uploads_larger_than_a_public_form(
    rt: Runtime, world: Any, signed_in: Any
) -> None:
    client, token = signed_in("ada")
    rows = "".join(
        f"ORG-BIG-{n},client,Big Co {n},pat{n}@big{n}.example,Pat,Lee\r\n" for n in range(1500)
    )
    text = IMPORT_CSV.split("\r\n")[0] + "\r\n" + rows
    assert len(text) > 64 * 1024
    response = client.post(
        "/admin/contacts/import",
        data={"csrf_token": token, "dry_run": "yes"},
        files={"file": ("big.csv", text, "text/csv")},
    )
    assert response.status_code == 200 and "Dry run" in response.text, response.text[:500]
    # the public pages keep their small limit
    assert client.post("/preferences/x", content=b"a=" + b"b" * 70_000).status_code == 413


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_admin_without_totp_while_it_is_required_reaches_only_enrollment(
    rt: Runtime, routed_app: Any, world: Any, make_user: Any, password_hash: str
) -> None:
    # Given a second admin with an API token, and TOTP then required (ada has enrolled)
    make_user(username="bea", role="admin", email="bea@cpi.example", password_hash=password_hash)
    with rt.sessions.begin() as s:
        ada = access.actor_for_username(s, "ada", via="web")
        bea_token = access.create_api_token(s, ada, name="bea's sync", username="bea").token
        secret = totp.begin_enrollment(s, ada, settings=rt.settings)
        code = totp.code_at(secret, totp.step_at(time.time()))
        totp.confirm_enrollment(s, ada, code, settings=rt.settings)
        assert totp.set_totp_required_for_admins(s, ada, True) == ["bea"]
    values = world[Role.ADMIN]
    with TestClient(routed_app) as client:
        # When bea signs in, she lands on her account page
        response = client.post(
            "/admin/login",
            data={"username": "bea", "password": PASSWORD, "next": "/admin/campaigns"},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/admin/account"
        page = client.get("/admin/account").text
        assert "Admins must use an authenticator app" in page
        token = csrf_of(page)
        # Then every other page sends her there and every other action is refused
        for method, path, endpoint in app_routes(routed_app):
            if allowed_roles(endpoint) is None or not path.startswith("/admin"):
                continue
            if allowed_while_enrolling(endpoint):
                assert path.startswith("/admin/account") or "logout" in path, path
                continue
            url = _url(path, values)
            data = {"csrf_token": token} if method == "POST" else None
            response = client.request(method, url, data=data, follow_redirects=False)
            if method == "GET":
                assert response.status_code == 303, (method, path, response.status_code)
                assert response.headers["location"] == "/admin/account", (method, path)
            else:
                assert response.status_code == 403, (method, path, response.status_code)
                assert "authenticator app" in response.text, (method, path)
        # and the API refuses her token, saying who must enroll
        headers = {"authorization": f"Bearer {bea_token}"}
        for method, path, endpoint in app_routes(routed_app):
            if allowed_roles(endpoint) is None or not path.startswith(API):
                continue
            response = client.request(method, _url(path, values), headers=headers)
            assert response.status_code == 403, (method, path, response.status_code)
            assert "'bea'" in response.json()["detail"], (method, path)
        # When she enrolls, everything opens up again
        client.post("/admin/account/totp", data={"csrf_token": token})
        with rt.sessions() as s:
            bea = s.scalars(select(User).where(User.username == "bea")).one()
            bea_secret = totp.stored_secret(bea, rt.settings)
        code = totp.code_at(bea_secret, totp.step_at(time.time()))
        response = client.post(
            "/admin/account/totp/confirm", data={"csrf_token": token, "code": code}
        )
        assert response.status_code == 200 and "Two-step sign-in is on" in response.text
        assert client.get("/admin/campaigns").status_code == 200
        assert client.get("/api/v1/campaigns", headers=headers).status_code == 200
