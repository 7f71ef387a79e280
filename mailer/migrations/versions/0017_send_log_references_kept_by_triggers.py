"""send log: its references kept by triggers on the rows referred to, not by foreign keys

A foreign key checks every row inserted: planning a campaign ran three checks per send row (its
campaign, contact and organization), each a query with a row lock, 58 % of planning's time
in PostgreSQL (docs/performance.md §14). Every row planning writes comes from a join of
those very rows, so the checks could never fail. What the keys also did, on delete, is
kept by triggers on the referred tables, as the keys did it:

- a campaign deleted takes its send log with it (was ON DELETE CASCADE);
- a contact or an organization deleted leaves its sends detached: contact_id or
  organization_id NULL (was ON DELETE SET NULL).

What a key also did is keep a row from being planned for a contact being deleted. Only
retention's purge deletes contacts and organizations, and it never overlaps a plan: planning
holds a lock shared, the purge holds it alone (`mailer.db.send_log_writers`).

The triggers' text is in `mailer/migrations/send_log_triggers.py`, which a later migration
that batch-alters one of these tables on SQLite must use.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

from alembic import op

from mailer.migrations import send_log_triggers

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: The foreign keys this drops, by the send log's column, with what each did on delete.
_KEYS = {
    "campaign_id": ("fk_sends_campaign_id_campaigns", "CASCADE"),
    "contact_id": ("fk_sends_contact_id_contacts", "SET NULL"),
    "organization_id": ("fk_sends_organization_id_organizations", "SET NULL"),
}


def upgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        for name, _ in _KEYS.values():
            batch_op.drop_constraint(name, type_="foreignkey")
    send_log_triggers.create(op)


def downgrade() -> None:
    send_log_triggers.drop(op)
    for column, table, action in send_log_triggers.REFERENCES:
        # a reference left dangling (a row written outside mailer, a TRUNCATE) would fail the
        # key's creation; NOT EXISTS, not NOT IN: PostgreSQL makes only the first an anti-join
        op.execute(
            f"{action} WHERE {column} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {table} WHERE {table}.id = sends.{column})"
        )
    with op.batch_alter_table("sends", schema=None) as batch_op:
        for column, table, _ in send_log_triggers.REFERENCES:
            name, on_delete = _KEYS[column]
            batch_op.create_foreign_key(name, table, [column], ["id"], ondelete=on_delete)
