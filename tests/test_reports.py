"""Campaign lists with counts, reports and CSV exports; contact search and manual suppression;
audit log search (core, both databases)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

import pytest
from sqlalchemy import select

from mailer import access, audit, campaigns, reports
from mailer.contacts import compliance, lookup
from mailer.errors import CampaignError, PermissionDeniedError, RuleError
from mailer.models import AuditEvent, Campaign, OptOut, Send, Suppression, utcnow
from mailer.runtime import Runtime


def _actor(rt: Runtime, username: str) -> access.Actor:
    with rt.sessions() as s:
        return access.actor_for_username(s, username, via="web")


def _campaign(rt: Runtime, username: str, category: str, template: str) -> Campaign:
    return campaigns.create_campaign(
        rt,
        actor=_actor(rt, username),
        name=f"{username} {category}",
        category=category,
        template=template,
    )


def _send(s: Any, campaign: Campaign, contact: Any, status: str, **kw: Any) -> Send:
    row = Send(
        campaign_id=campaign.id,
        contact_id=contact.id,
        organization_id=contact.organization_id,
        category=campaign.category,
        email=contact.email,
        status=status,
        **kw,
    )
    s.add(row)
    s.flush()
    return row


def test_campaign_rows_count_outcomes_skip_reasons_opt_outs_bounces_and_complaints(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    promo = _campaign(rt, "mark", "promotions", "promotions/open-enrollment")
    people = [make_contact() for _ in range(6)]
    with rt.sessions.begin() as s:
        sent = _send(s, promo, people[0], "sent")
        complained = _send(s, promo, people[1], "sent")
        _send(s, promo, people[2], "failed", smtp_code=550, smtp_reply="5.1.1 no such user")
        _send(s, promo, people[3], "skipped", skip_reason="opted_out")
        _send(s, promo, people[4], "skipped", skip_reason="opted_out")
        _send(s, promo, people[5], "unknown")
        for send, source in ((sent, "one_click"), (complained, "complaint")):
            s.add(
                OptOut(
                    contact_id=send.contact_id,
                    address_hash="h",
                    category="promotions",
                    source=source,
                    send_id=send.id,
                )
            )
    mark = _actor(rt, "mark")
    with rt.sessions() as s:
        [row] = reports.list_campaign_rows(s, mark)
    data = row.counts.as_dict()
    assert (data["sent"], data["failed"], data["unknown"], data["skipped"]) == (2, 1, 1, 2)
    assert data["skipped_by_reason"] == {"opted_out": 2}
    assert (data["opt_outs"], data["bounces"], data["complaints"]) == (1, 1, 1)
    assert (row.counts.total, row.counts.done) == (6, 6)


def test_each_role_sees_its_own_campaigns_and_a_refusal_is_audited(rt: Runtime, staff: Any) -> None:
    promo = _campaign(rt, "mark", "promotions", "promotions/open-enrollment")
    service = _campaign(rt, "amy", "service", "service/planned-maintenance")
    other = _campaign(rt, "otto", "service", "service/planned-maintenance")
    actors = {name: _actor(rt, name) for name in ("ada", "mark", "amy")}
    with rt.sessions() as s:

        def names(username: str) -> set[int]:
            return {r.campaign.id for r in reports.list_campaign_rows(s, actors[username])}

        assert names("ada") == {promo.id, service.id, other.id}
        assert names("mark") == {promo.id}
        assert names("amy") == {service.id}
    with rt.sessions() as s, pytest.raises(PermissionDeniedError, match="otto's service"):
        reports.get_visible_campaign(s, actors["amy"], other.id)
    with rt.sessions() as s:
        denied = s.scalars(select(AuditEvent).where(AuditEvent.action == "denied")).one()
    assert (denied.actor, denied.object_id) == ("amy", str(other.id))


def test_the_report_csv_has_every_send_and_defuses_formula_cells(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    promo = _campaign(rt, "mark", "promotions", "promotions/open-enrollment")
    people = [make_contact() for _ in range(7)]
    with rt.sessions.begin() as s:
        for n, person in enumerate(people):
            _send(s, promo, person, "failed", smtp_code=550, smtp_reply=f"=HYPERLINK({n})")
    with rt.sessions() as s:
        text = "".join(reports.report_csv(s, promo.id, chunk=3))
        failures = reports.failures(s, promo.id)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 7 and len(failures) == 7
    assert {r["smtp_reply"][:2] for r in rows} == {"'="}


def test_contact_search_is_scoped_to_an_account_managers_clients(
    rt: Runtime, staff: Any, make_org: Any, make_contact: Any
) -> None:
    amy = staff["account_manager"]
    own = make_contact(organization=make_org(name="Amy Co", account_manager_id=amy.id))
    make_contact(organization=make_org(name="Other Co"))
    amy_actor, mark = _actor(rt, "amy"), _actor(rt, "mark")
    promo = _campaign(rt, "mark", "promotions", "promotions/open-enrollment")
    with rt.sessions.begin() as s:
        _send(s, promo, own, "failed", smtp_code=550, smtp_reply="5.1.1 no such user")
    with rt.sessions() as s:
        assert [r.id for r in lookup.search_contacts(s, amy_actor, "").items] == [own.id]
        assert len(lookup.search_contacts(s, mark, " Co").items) == 2
        details = lookup.contact_record(s, amy_actor, own.id)
    assert details.contact.account_manager == "amy" and details.consent["promotions"] is True
    assert details.contact.name and details.contact.created_at is not None
    [sent] = details.sends
    assert (sent.campaign_name, sent.smtp) == (promo.name, "550 5.1.1 no such user")
    assert sent.at is not None  # never sent: when it was last updated


def test_an_admin_suppresses_and_unsuppresses_with_a_reason_others_may_not(
    rt: Runtime, staff: Any, make_contact: Any
) -> None:
    contact = make_contact()
    ada, mark = _actor(rt, "ada"), _actor(rt, "mark")
    with rt.sessions.begin() as s, pytest.raises(compliance.ComplianceError):
        compliance.suppress_contact(s, ada, contact.id, reason=" ")
    with rt.sessions.begin() as s:
        assert compliance.suppress_contact(s, ada, contact.id, reason="asked by phone")
        assert not compliance.suppress_contact(s, ada, contact.id, reason="again, twice")
    with rt.sessions() as s:
        row = s.scalars(select(Suppression)).one()
        assert (row.reason, row.detail) == ("manual", "asked by phone")
    with rt.sessions.begin() as s, pytest.raises(PermissionDeniedError):
        compliance.unsuppress_contact(s, mark, contact.id, reason="marketing wants it")
    with rt.sessions.begin() as s:
        assert compliance.unsuppress_contact(s, ada, contact.id, reason="address fixed")
        assert not compliance.unsuppress_contact(s, ada, contact.id, reason="not blocked now")
    with rt.sessions() as s:
        assert s.scalars(select(Suppression)).first() is None
        actions = s.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["suppression.add", "denied", "suppression.remove"]


def test_audit_search_filters_by_actor_action_prefix_object_and_time(
    rt: Runtime, staff: Any
) -> None:
    ada = _actor(rt, "ada")
    now = utcnow()
    with rt.sessions.begin() as s:
        for n, (who, action, obj) in enumerate(
            [
                ("ada", "campaign.launch", "1"),
                ("ada", "campaign.pause", "1"),
                ("mark", "campaign.launch", "2"),
                ("ada", "login", ""),
            ]
        ):
            s.add(
                AuditEvent(
                    actor=who,
                    action=action,
                    object_type="campaign" if obj else "user",
                    object_id=obj,
                    at=now - dt.timedelta(hours=n),
                    details={},
                )
            )
    with rt.sessions() as s:

        def found(**kw: Any) -> list[str]:
            rows = audit.query_events(s, ada, audit.AuditQuery(**kw)).items
            return [f"{e.actor} {e.action} {e.object_id}".strip() for e in rows]

        # newest first (by id: events are written as they happen); a family is "campaign."
        # (the screen's form) or "campaign.*"
        for family in ("campaign.", "campaign.*"):
            assert found(actor="ada", action=family) == [
                "ada campaign.pause 1",
                "ada campaign.launch 1",
            ]
        assert found(action="campaign.launch") == [
            "mark campaign.launch 2",
            "ada campaign.launch 1",
        ]
        assert found(object_type="campaign", object_id="2") == ["mark campaign.launch 2"]
        assert found(since=now - dt.timedelta(minutes=90)) == [
            "ada campaign.pause 1",
            "ada campaign.launch 1",
        ]
        first = audit.query_events(s, ada, limit=2)
        rest = audit.query_events(s, ada, limit=2, cursor=first.next_cursor)
        assert len({e.id for e in first.items + rest.items}) == 4


def test_a_campaign_needs_a_name_at_create_as_at_edit(rt: Runtime, staff: Any) -> None:
    # the API's create stripped "  " to "" and stored a nameless draft (edit refused it)
    with pytest.raises(CampaignError, match="give the campaign a name"):
        campaigns.create_campaign(
            rt,
            actor=_actor(rt, "mark"),
            name="  ",
            category="promotions",
            template="promotions/open-enrollment",
        )
    with rt.sessions() as s:
        assert s.scalars(select(Campaign)).first() is None


def test_only_a_draft_is_edited_and_the_edit_is_audited_with_before_and_after(
    rt: Runtime, staff: Any
) -> None:
    promo = _campaign(rt, "mark", "promotions", "promotions/open-enrollment")
    mark, amy = _actor(rt, "mark"), _actor(rt, "amy")
    with pytest.raises(RuleError):
        campaigns.edit_draft(
            rt,
            promo.id,
            actor=mark,
            name="X",
            template="promotions/open-enrollment",
            rule_text="kindd = client",
        )
    with pytest.raises(PermissionDeniedError):
        campaigns.edit_draft(
            rt, promo.id, actor=amy, name="X", template="promotions/open-enrollment", rule_text=""
        )
    campaigns.edit_draft(
        rt,
        promo.id,
        actor=mark,
        name="Spring",
        template="promotions/aca-reporting",
        rule_text="kind = client",
    )
    with rt.sessions() as s:
        row = s.get(Campaign, promo.id)
        assert (row.name, row.template, row.rule_text) == (
            "Spring",
            "promotions/aca-reporting",
            "kind = client",
        )
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.edit")).one()
    assert event.details["before"]["name"] == "mark promotions"
    assert event.details["after"]["template"] == "promotions/aca-reporting"
    campaigns.cancel_campaign(rt, promo.id, actor=mark)
    with pytest.raises(CampaignError, match="only a draft"):
        campaigns.edit_draft(
            rt,
            promo.id,
            actor=mark,
            name="Again",
            template="promotions/aca-reporting",
            rule_text="",
        )
