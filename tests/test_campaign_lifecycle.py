"""mailer.campaigns.lifecycle: the transition table, the compare-and-set, and that nothing else
in the code base writes a campaign's status."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.access import SYSTEM, Actor
from mailer.campaigns import lifecycle
from mailer.campaigns.lifecycle import TRANSITIONS, require_transition, transition
from mailer.enums import CampaignStatus, Role
from mailer.errors import CampaignError
from mailer.models import AuditEvent, Campaign
from tests.conftest import ROOT

S = CampaignStatus
ADA = Actor(user_id=1, username="ada", role=Role.ADMIN, via="web", ip="203.0.113.9")
BOB = Actor(user_id=2, username="bob", role=Role.ADMIN, via="cli")


def _status_writes(path: Path) -> list[str]:
    """Places in a source file that set a campaign's status other than by `transition`."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        # campaign.status = …, c.status = …
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "status"
                and "campaign" in ast.unparse(target.value).lower()
            ):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
        # update(Campaign)….values(status=…)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "values"
            and "update(Campaign)" in ast.unparse(node.func.value)
            and any(k.arg == "status" or k.arg is None for k in node.keywords)
        ):
            found.append(f"{path.name}:{node.lineno}: update(Campaign) … status")
        # setattr(campaign, "status", …)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "status"
        ):
            found.append(f"{path.name}:{node.lineno}: setattr(…, 'status', …)")
    # raw SQL
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if re.search(r"UPDATE\s+campaigns\b", line, re.IGNORECASE):
            found.append(f"{path.name}:{number}: {line.strip()[:80]}")
    return found


def test_nothing_but_transition_writes_a_campaign_status() -> None:
    sources = [
        p
        for folder in ("mailer", "workers")
        for p in (ROOT / folder).rglob("*.py")
        if "migrations" not in p.parts and p != Path(lifecycle.__file__)
    ]
    assert len(sources) > 50
    writes = [w for p in sources for w in _status_writes(p)]
    assert writes == [], "campaign status written outside lifecycle.transition:\n" + "\n".join(
        writes
    )


def test_the_scan_finds_each_kind_of_status_write(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "campaign.status = 'paused'\n"
        "session.execute(update(Campaign).where(x).values(status='sending'))\n"
        "setattr(campaign, 'status', 'completed')\n"
        "sql = 'UPDATE campaigns SET status = 1'\n"
        "send.status = 'sent'\n"
    )
    assert len(_status_writes(sample)) == 4


def test_the_table_fits_the_documented_lifecycle() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.CANCELLED] == frozenset()
    assert TRANSITIONS[S.SENDING] == {S.PAUSED, S.COMPLETED, S.CANCELLED}
    assert TRANSITIONS[S.PAUSED] == {S.SENDING, S.CANCELLED}
    assert S.COMPLETED not in TRANSITIONS[S.PAUSED]  # a paused campaign completes via resume
    assert {s for s, targets in TRANSITIONS.items() if S.SENDING in targets} == {
        S.DRAFT,
        S.SCHEDULED,
        S.MISSED,
        S.FAILED,
        S.PAUSED,
        S.COMPLETED,
    }
    # the module docstring draws every arrow of the table
    doc = lifecycle.__doc__ or ""
    for status in S:
        assert status.value in doc


def _campaign(rt, status: S = S.DRAFT) -> int:  # type: ignore[no-untyped-def]
    with rt.sessions.begin() as s:
        campaign = Campaign(
            name="c", category="features", template="t", created_by="ada", status=status.value
        )
        s.add(campaign)
        s.flush()
        return campaign.id


def test_a_transition_moves_once_and_audits_who_from_where(rt) -> None:
    cid = _campaign(rt, S.SENDING)
    with rt.sessions.begin() as s:
        assert transition(s, cid, S.PAUSED, actor=ADA, action="pause", detail="lunch")
        # the same move again finds the campaign paused already: a compare-and-set, not a set
        assert not transition(s, cid, S.PAUSED, actor=BOB, action="pause")
    with rt.sessions() as s:
        campaign = s.get(Campaign, cid)
        assert (campaign.status, campaign.status_detail) == ("paused", "lunch")
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.pause")).all()
        assert [(e.actor, e.object_id, e.ip) for e in events] == [("ada", str(cid), "203.0.113.9")]
        assert events[0].details == {
            "from": "sending",
            "to": "paused",
            "detail": "lunch",
            "via": "web",
        }


def test_a_move_outside_the_table_is_refused_and_changes_nothing(rt) -> None:
    cid = _campaign(rt, S.CANCELLED)
    with rt.sessions.begin() as s:
        assert not transition(s, cid, S.SENDING, actor=ADA, action="launch")
        with pytest.raises(CampaignError, match=r"cannot resume campaign \d+: it is cancelled"):
            require_transition(s, cid, S.SENDING, actor=ADA, action="resume", sources=(S.PAUSED,))
        with pytest.raises(ValueError, match="not in the lifecycle table"):
            transition(s, cid, S.COMPLETED, actor=ADA, action="x", sources=(S.DRAFT,))
    with rt.sessions() as s:
        assert s.get(Campaign, cid).status == "cancelled"
        assert s.scalar(select(AuditEvent.id)) is None


def test_a_transition_keeps_the_session_copy_of_the_campaign_fresh(rt) -> None:
    cid = _campaign(rt, S.SENDING)
    with rt.sessions.begin() as s:
        campaign = s.get(Campaign, cid)
        assert campaign.status == "sending"
        transition(s, cid, S.COMPLETED, actor=SYSTEM, action="complete")
        assert campaign.status == "completed"
