"""send log: one index fewer for each row planned and each claim (docs/performance.md §8)

The unique key leads with contact_id, (contact_id, campaign_id), so it also serves every lookup
by contact (a contact's history, retention, the foreign key's SET NULL). The frequency-cap
index then needs only the rows that were sent: a row enters it when its delivery is recorded,
not when it is planned or claimed.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_constraint("uq_sends_campaign_id_contact_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_sends_contact_id_campaign_id", ["contact_id", "campaign_id"]
        )
        batch_op.drop_index("ix_sends_contact_id_category_sent_at")
        batch_op.create_index(
            "ix_sends_contact_id_category_sent_at_sent",
            ["contact_id", "category", "sent_at"],
            unique=False,
            postgresql_where=sa.text("sent_at IS NOT NULL"),
            sqlite_where=sa.text("sent_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sends_contact_id_category_sent_at_sent")
        batch_op.create_index(
            "ix_sends_contact_id_category_sent_at",
            ["contact_id", "category", "sent_at"],
            unique=False,
        )
        batch_op.drop_constraint("uq_sends_contact_id_campaign_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_sends_campaign_id_contact_id", ["campaign_id", "contact_id"]
        )
