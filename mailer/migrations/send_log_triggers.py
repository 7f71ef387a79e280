"""The send log's references kept by triggers (migration 0017), for migrations to drop and make
again.

The send log has no foreign keys (docs/performance.md §14). A trigger on each table it refers to
does what the key did on delete: a campaign deleted takes its sends along, a contact or an
organization deleted leaves its sends detached (NULL).

On SQLite a batch migration (`op.batch_alter_table`) rebuilds its table: it makes a copy, drops
the table and renames the copy. Dropping `campaigns`, `contacts` or `organizations` drops its
trigger with it, silently; renaming the copy of `sends` fails while the triggers name `sends`
("error in trigger …: no such table: main.sends"). So a migration that batch-alters any of
those four tables does it inside `dropped(op)`:

    with send_log_triggers.dropped(op):
        with op.batch_alter_table("contacts") as batch_op:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: (the send log's column, the table it refers to, what a delete there does to the send log)
REFERENCES = (
    ("campaign_id", "campaigns", "DELETE FROM sends"),
    ("contact_id", "contacts", "UPDATE sends SET contact_id = NULL"),
    ("organization_id", "organizations", "UPDATE sends SET organization_id = NULL"),
)


def _trigger(table: str) -> str:
    return f"sends_on_{table}_deleted"


def create(op: Any) -> None:
    """Make the three triggers."""
    postgres = op.get_bind().dialect.name == "postgresql"
    for column, table, action in REFERENCES:
        name = _trigger(table)
        if postgres:
            # once per statement, with the rows deleted as a table: retention deletes thousands
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN {action} WHERE {column} IN (SELECT id FROM deleted); RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER DELETE ON {table} REFERENCING OLD TABLE AS deleted "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {name} AFTER DELETE ON {table} FOR EACH ROW "
                f"BEGIN {action} WHERE {column} = OLD.id; END"
            )


def drop(op: Any) -> None:
    """Drop the three triggers."""
    postgres = op.get_bind().dialect.name == "postgresql"
    for _, table, _ in REFERENCES:
        name = _trigger(table)
        if postgres:
            op.execute(f"DROP TRIGGER {name} ON {table}")
            op.execute(f"DROP FUNCTION {name}()")
        else:
            op.execute(f"DROP TRIGGER {name}")


@contextmanager
def dropped(op: Any) -> Iterator[None]:
    """The triggers dropped for the block and made again after it (see the module's text)."""
    drop(op)
    yield
    create(op)
