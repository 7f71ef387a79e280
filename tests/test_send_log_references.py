"""The send log's references without foreign keys (migration 0017): what a delete does to
them, a purge that cannot miss a row planned meanwhile, and the way back to the keys."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from mailer import db
from mailer.migrations import send_log_triggers
from mailer.models import Campaign, Contact, Send
from mailer.retention import run_retention
from mailer.runtime import Runtime
from tests.test_retention import NOW, TESTER, campaign, old_contact, old_org, send


def _sends(rt: Runtime) -> dict[int, tuple[Any, ...]]:
    with rt.sessions() as s:
        rows = s.execute(select(Send.id, Send.campaign_id, Send.contact_id, Send.organization_id))
        return {row.id: tuple(row[1:]) for row in rows}


def test_a_delete_detaches_the_sends_of_contacts_and_organizations_and_takes_a_campaigns(
    rt: Runtime, make_org, make_contact
) -> None:
    # Given two campaigns and sends to three contacts of two organizations
    first, second = campaign(rt, "First"), campaign(rt, "Second")
    acme, other = make_org(name="Acme"), make_org(name="Other")
    ana, bo = make_contact(organization=acme), make_contact(organization=acme)
    cy = make_contact(organization=other)
    to_ana, to_bo, to_cy = (send(rt, first, c, NOW) for c in (ana, bo, cy))
    again_to_cy = send(rt, second, cy, NOW)

    # When two contacts are deleted in one statement (as by hand: mailer deletes them only
    # in retention's purge, after their sends)
    with rt.sessions.begin() as s:
        s.execute(text("DELETE FROM contacts WHERE id IN (:a, :b)"), {"a": ana.id, "b": bo.id})
    # Then their sends stay, detached from the contact, still of their organization
    sends = _sends(rt)
    assert sends[to_ana] == (first, None, acme.id)
    assert sends[to_bo] == (first, None, acme.id)
    assert sends[to_cy] == (first, cy.id, other.id)

    # When their organization is deleted too, its sends lose it as well
    with rt.sessions.begin() as s:
        s.execute(text("DELETE FROM organizations WHERE id = :id"), {"id": acme.id})
    sends = _sends(rt)
    assert sends[to_ana] == (first, None, None) and sends[to_bo] == (first, None, None)
    assert sends[to_cy] == (first, cy.id, other.id)

    # When a campaign is deleted, its send log goes with it and the other campaign's stays
    with rt.sessions.begin() as s:
        s.execute(text("DELETE FROM campaigns WHERE id = :id"), {"id": first})
    assert _sends(rt) == {again_to_cy: (second, cy.id, other.id)}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_purge_waits_for_a_plan_under_way_and_then_keeps_the_contact_it_plans_for(
    rt: Runtime, make_org, make_contact
) -> None:
    # Given a contact that retention purges, and a plan under way that has just written a
    # row for them (its transaction holds the send log's writers' lock, shared)
    org = old_org(make_org)
    doomed = old_contact(make_contact, org)
    planned = campaign(rt)
    with rt.sessions() as plan:
        db.send_log_writers(plan)
        plan.add(
            Send(
                campaign_id=planned,
                contact_id=doomed.id,
                organization_id=org.id,
                category="features",
                email=doomed.email,
                status="queued",
            )
        )
        plan.flush()
        # When retention runs meanwhile
        purge = threading.Thread(target=run_retention, args=(rt,), kwargs={"actor": TESTER})
        purge.start()
        # Then it waits for the plan before it chooses what to delete
        assert _waiting_for_the_lock(rt), "the purge did not wait for the plan to commit"
        assert purge.is_alive()
        plan.commit()
    purge.join(30)
    assert not purge.is_alive()
    # and once the plan has committed, the contact about to be mailed counts as recent: the
    # contact, its organization and the planned row all stay (without the lock the purge
    # deleted the contact under the plan, which then committed a row for a contact gone)
    with rt.sessions() as s:
        assert s.scalar(select(Contact.id).where(Contact.id == doomed.id)) == doomed.id
        rows = s.execute(select(Send.contact_id, Send.organization_id)).all()
        assert [tuple(r) for r in rows] == [(doomed.id, org.id)]


def _waiting_for_the_lock(rt: Runtime) -> bool:
    """True once a transaction waits for the send log's writers' lock (within 10 s)."""
    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND (classid::bigint << 32 | objid::bigint) = :key"
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with rt.engine.connect() as conn:
            if conn.scalar(waiting, {"key": db.SEND_LOG_WRITERS}):
                return True
        time.sleep(0.02)
    return False


def test_a_sqlite_batch_migration_keeps_the_triggers_when_it_drops_and_makes_them_again(
    tmp_path: Path,
) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'batch.db'}")
    db.upgrade(engine)
    # Without the triggers dropped, rebuilding the send log fails on them
    failing = pytest.raises(OperationalError, match=r"no such table: main\.sends")
    with failing, engine.begin() as conn:
        _rebuild(Operations(MigrationContext.configure(conn)), "sends")
    # When a migration rebuilds each table they concern inside `dropped`
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        with send_log_triggers.dropped(op):
            for table in ("sends", "campaigns", "contacts", "organizations"):
                _rebuild(op, table)
    # Then the three triggers are there again, once each
    with engine.connect() as conn:
        names = conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        assert sorted(names) == [
            "sends_on_campaigns_deleted",
            "sends_on_contacts_deleted",
            "sends_on_organizations_deleted",
        ]
    engine.dispose()


def _rebuild(op: Operations, table: str) -> None:
    """What a batch migration does to `table` on SQLite: copy, drop, rename."""
    with op.batch_alter_table(table, recreate="always") as batch_op:
        batch_op.add_column(sa.Column("scratch", sa.Integer))


def test_downgrading_brings_the_keys_back_and_clears_references_left_dangling(
    blank_url: str,
) -> None:
    engine = db.make_engine(blank_url)
    db.upgrade(engine)
    with Session(engine) as session, session.begin():
        session.add(
            Campaign(id=1, name="c", category="features", template="t", created_by="tester")
        )
    with engine.begin() as conn:
        # Given sends whose contact, organization or campaign is not there (rows written
        # outside mailer: nothing checks a reference when a row is inserted)
        for send_id, campaign_id in ((1, 1), (2, 99)):
            conn.execute(
                text(
                    "INSERT INTO sends (id, campaign_id, contact_id, organization_id,"
                    " category, email, status, skip_reason, attempts, smtp_reply,"
                    " message_id, created_at) VALUES (:id, :campaign, 7, 8, 'features',"
                    " 'a@b.example', 'sent', '', 1, '', '', CURRENT_TIMESTAMP)"
                ),
                {"id": send_id, "campaign": campaign_id},
            )
    # When the schema goes back to foreign keys
    command.downgrade(db._alembic_config(engine), "0016")
    # Then the keys are there again, and no row breaks them
    keys = {fk["name"] for fk in inspect(engine).get_foreign_keys("sends")}
    assert keys == {
        "fk_sends_campaign_id_campaigns",
        "fk_sends_contact_id_contacts",
        "fk_sends_organization_id_organizations",
    }
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, contact_id, organization_id FROM sends"))
        assert [tuple(r) for r in rows] == [(1, None, None)]
    # and upgrading again drops them once more
    db.upgrade(engine)
    assert inspect(engine).get_foreign_keys("sends") == []
    engine.dispose()
