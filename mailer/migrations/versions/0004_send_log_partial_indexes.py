"""send log: partial indexes for the sweep instead of (status, lease_expires_at)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sends_status_lease_expires_at")
        batch_op.create_index(
            "ix_sends_lease_expires_at_sending",
            ["lease_expires_at"],
            unique=False,
            postgresql_where=sa.text("status = 'sending'"),
            sqlite_where=sa.text("status = 'sending'"),
        )
        batch_op.create_index(
            "ix_sends_next_attempt_at_deferred",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("status = 'deferred'"),
            sqlite_where=sa.text("status = 'deferred'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sends_next_attempt_at_deferred")
        batch_op.drop_index("ix_sends_lease_expires_at_sending")
        batch_op.create_index(
            "ix_sends_status_lease_expires_at", ["status", "lease_expires_at"], unique=False
        )
