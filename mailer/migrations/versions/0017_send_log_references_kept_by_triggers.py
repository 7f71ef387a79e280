"""send log: its references kept by triggers on the rows referred to, not by foreign keys

A foreign key checks every row inserted: planning a campaign ran three checks per send row (its
campaign, contact and organization), each a query with a row lock, 58 % of planning's time
in PostgreSQL (docs/performance.md §14). Every row planning writes comes from a join of
those very rows, so the checks could never fail. What the keys also did, on delete, is
kept by triggers on the referred tables, as the keys did it:

- a campaign deleted takes its send log with it (was ON DELETE CASCADE);
- a contact or an organization deleted leaves its sends detached: contact_id or
  organization_id NULL (was ON DELETE SET NULL).

A row planned for a contact that another transaction deletes meanwhile is kept out by a lock,
not by the key: planning holds `SEND_LOG_WRITERS` shared, retention's purge holds it alone
(`mailer.db.send_log_writers`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

#: (constraint, column, table referred to, what a delete there does to the send log)
_REFERENCES = (
    ("fk_sends_campaign_id_campaigns", "campaign_id", "campaigns", "DELETE FROM sends"),
    (
        "fk_sends_contact_id_contacts",
        "contact_id",
        "contacts",
        "UPDATE sends SET contact_id = NULL",
    ),
    (
        "fk_sends_organization_id_organizations",
        "organization_id",
        "organizations",
        "UPDATE sends SET organization_id = NULL",
    ),
)
_ON_DELETE = {
    "campaign_id": "CASCADE",
    "contact_id": "SET NULL",
    "organization_id": "SET NULL",
}


def upgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        for name, *_ in _REFERENCES:
            batch_op.drop_constraint(name, type_="foreignkey")
    postgres = op.get_bind().dialect.name == "postgresql"
    for _, column, table, action in _REFERENCES:
        trigger = f"sends_on_{table}_deleted"
        if postgres:
            # once per statement, with the rows deleted as a table: retention deletes thousands
            op.execute(
                f"""
                CREATE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    {action} WHERE {column} IN (SELECT id FROM deleted);
                    RETURN NULL;
                END $$
                """
            )
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER DELETE ON {table} "
                f"REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT EXECUTE FUNCTION {trigger}()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER DELETE ON {table} FOR EACH ROW "
                f"BEGIN {action} WHERE {column} = OLD.id; END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for _, column, table, action in _REFERENCES:
        trigger = f"sends_on_{table}_deleted"
        op.execute(f"DROP TRIGGER {trigger}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION {trigger}()")
        # a reference left dangling by a delete outside mailer would fail the key's creation
        op.execute(f"{action} WHERE {column} NOT IN (SELECT id FROM {table})")
    with op.batch_alter_table("sends", schema=None) as batch_op:
        for name, column, table, _ in _REFERENCES:
            batch_op.create_foreign_key(name, table, [column], ["id"], ondelete=_ON_DELETE[column])
