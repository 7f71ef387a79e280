"""Previews and test sends of a message as a real contact, and audience counts (core)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from mailer import access, previews
from mailer.errors import NotFoundError, PermissionDeniedError, RuleError
from mailer.models import AuditEvent, Send
from mailer.runtime import Runtime


def _actor(rt: Runtime, username: str) -> access.Actor:
    with rt.sessions() as s:
        return access.actor_for_username(s, username, via="web")


def test_a_preview_renders_headers_text_and_html_for_the_contact_and_is_audited(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    contact = make_contact(first_name="Robin")
    result = previews.preview_message(
        rt, _actor(rt, "mark"), template="promotions/open-enrollment", contact=contact.email
    )
    assert result.contact_id == contact.id
    assert "Hello Robin" in result.text and "Hello Robin" in result.html
    headers = dict(result.headers)
    assert headers["To"].endswith(f"<{contact.email}>") and "List-Unsubscribe" in headers
    with rt.sessions() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "template.preview")).one()
    assert (event.actor, event.details["contact_id"]) == ("mark", contact.id)


def test_marketing_cannot_preview_a_policy_notice_and_the_refusal_is_audited(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    contact = make_contact()
    with pytest.raises(PermissionDeniedError, match="policy mail needs another role"):
        previews.preview_message(
            rt, _actor(rt, "mark"), template="policy/privacy-policy-change", contact=contact.id
        )
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).where(AuditEvent.action == "denied")) == 1


def test_an_account_manager_previews_only_with_their_own_clients(
    rt: Runtime, staff: Any, make_org: Any, make_contact: Any
) -> None:
    amy, otto = staff["account_manager"], staff["other_manager"]
    own = make_contact(organization=make_org(account_manager_id=amy.id))
    other = make_contact(organization=make_org(account_manager_id=otto.id))
    actor = _actor(rt, "amy")
    ok = previews.preview_message(rt, actor, template="service/planned-maintenance", contact=own.id)
    assert "Amy Manager" in ok.text  # service mail comes from the account manager
    # the one rule for seeing a contact (contacts.lookup), the same in every front end
    with pytest.raises(PermissionDeniedError, match="a client you do not manage"):
        previews.preview_message(
            rt, actor, template="service/planned-maintenance", contact=other.id
        )
    with pytest.raises(NotFoundError):
        previews.preview_message(rt, actor, template="service/planned-maintenance", contact=999999)


def test_a_test_send_arrives_marked_and_leaves_no_send_log_row(
    rt: Runtime, staff: Any, make_contact: Any, smtp_server: Any
) -> None:
    settings = rt.settings.with_(smtp_url=smtp_server.url, smtp_local_hostname="mailer.test")
    local = Runtime(settings, rt.engine, rt.sessions)
    contact = make_contact()
    deliveries = asyncio.run(
        previews.send_test(
            local,
            _actor(rt, "mark"),
            template="promotions/open-enrollment",
            contact=contact.id,
            to=["mark@cpi.example", " Other@CPI.example "],
        )
    )
    assert [(d.address, d.outcome) for d in deliveries] == [
        ("mark@cpi.example", "sent"),
        ("Other@cpi.example", "sent"),
    ]
    [first, _] = smtp_server.messages
    assert first.rcpt_tos == ["mark@cpi.example"]
    assert b"\r\nSubject: [TEST] Open enrollment" in first.data
    assert b"X-Mailer-Test: yes" in first.data and b"To: <mark@cpi.example>" in first.data
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Send)) == 0
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.test_send")).one()
    assert event.details["to"] == ["mark@cpi.example", "Other@cpi.example"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one address"),
        ("a@x.example, not an address", "'not an address' is not a usable address"),
        (",".join(f"u{n}@x.example" for n in range(11)), "at most 10"),
    ],
)
def test_test_send_addresses_are_checked_before_anything_goes(text: str, message: str) -> None:
    with pytest.raises(previews.TestSendError, match=message):
        previews.parse_test_addresses(text)


def test_a_count_says_where_a_rule_is_wrong_and_counts_a_good_one(
    rt: Runtime, staff: Any, make_org: Any, make_contact: Any
) -> None:
    for state in ("OR", "OR", "WA"):
        make_contact(organization=make_org(state=state))
    actor = _actor(rt, "mark")
    with pytest.raises(RuleError) as caught:
        previews.count_audience(rt, actor, rule_text='stat = "OR"', category="promotions")
    assert (caught.value.line, caught.value.column, caught.value.suggestion) == (1, 1, "state")
    result = previews.count_audience(
        rt, actor, rule_text='state = "OR"', category="promotions", sample_size=1
    )
    assert (result.eligible, len(result.sample)) == (2, 1)


@pytest.mark.parametrize("given", ["9" * 40, "²", " ² "])
def test_a_contact_given_as_digits_no_id_has_is_not_found(
    rt: Runtime, staff: Any, make_contact: Any, given: str
) -> None:
    # the admin preview's ?contact= once overflowed the database (40 digits) or int() ("²",
    # a digit to str.isdigit): both 500s
    make_contact()
    with pytest.raises(NotFoundError, match="no contact"):
        previews.preview_message(
            rt, _actor(rt, "mark"), template="promotions/open-enrollment", contact=given
        )
