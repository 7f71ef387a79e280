"""Fixtures for the admin app and API tests: users with passwords, a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from mailer.access.users import hash_password
from mailer.models import User
from mailer.runtime import Runtime
from mailer.web import create_app

#: Every test user's password (hashed once per session: argon2 takes ~0.1 s).
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def staff(make_user: Callable[..., User], password_hash: str) -> dict[str, User]:
    """One user per role, all with PASSWORD, plus a second account manager."""
    return {
        "admin": make_user(
            username="ada", role="admin", email="ada@cpi.example", password_hash=password_hash
        ),
        "marketing": make_user(
            username="mark",
            role="marketing",
            email="mark@cpi.example",
            password_hash=password_hash,
        ),
        "account_manager": make_user(
            username="amy",
            role="account_manager",
            display_name="Amy Manager",
            email="amy@cpi.example",
            password_hash=password_hash,
        ),
        "other_manager": make_user(
            username="otto",
            role="account_manager",
            email="otto@cpi.example",
            password_hash=password_hash,
        ),
    }


@pytest.fixture
def web_app(rt: Runtime) -> Any:
    return create_app(runtime=rt, dispatch=lambda batches: None)


@pytest.fixture
def client_for(web_app: Any) -> Iterator[Callable[[str], TestClient]]:
    """`client_for("mark")`: a TestClient signed in as that user."""
    clients: list[TestClient] = []

    def make(username: str) -> TestClient:
        client = TestClient(web_app, base_url="http://testserver")
        clients.append(client)
        response = client.post(
            "/admin/login",
            data={"username": username, "password": PASSWORD, "next": "/admin/"},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return client

    yield make
    for client in clients:
        client.close()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)
