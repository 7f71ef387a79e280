"""operations: soft-bounce counts, delivery events, operator alerts, scheduled-job leases

Revision ID: 0013
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from mailer.models import UTCDateTime

revision = "0013"
down_revision = "0009"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "soft_bounces",
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", UTCDateTime(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.Column("last_send_id", sa.BigInteger(), nullable=True),
        sa.Column("last_detail", sa.Text(), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_send_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("address_hash", name=op.f("pk_soft_bounces")),
    )
    op.create_table(
        "delivery_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("event_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("send_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
        sa.UniqueConstraint(
            "source", "event_key", name=op.f("uq_delivery_events_source_event_key")
        ),
    )
    op.create_index(
        "ix_delivery_events_campaign_id_kind", "delivery_events", ["campaign_id", "kind"]
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("raised_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("key", name=op.f("uq_alerts_key")),
    )
    op.create_index("ix_alerts_sent_at", "alerts", ["sent_at"])
    op.create_table(
        "scheduled_jobs",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("last_run_on", sa.Date(), nullable=True),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduled_jobs")),
    )


def downgrade() -> None:
    op.drop_table("scheduled_jobs")
    op.drop_index("ix_alerts_sent_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_delivery_events_campaign_id_kind", table_name="delivery_events")
    op.drop_table("delivery_events")
    op.drop_table("soft_bounces")
