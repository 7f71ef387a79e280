"""campaigns and the send log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 07:54:42.562275
"""

import sqlalchemy as sa
from alembic import op

import mailer.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=False),
        sa.Column("audience", sa.String(length=100), nullable=False),
        sa.Column("rule_text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("sender_username", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("status_detail", sa.Text(), nullable=False),
        sa.Column("scheduled_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("launched_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", mailer.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", mailer.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_campaigns_status_scheduled_at"), ["status", "scheduled_at"], unique=False
        )

    op.create_table(
        "sends",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.Column("organization_id", sa.Integer(), nullable=True),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("skip_reason", sa.String(length=30), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_attempt_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("smtp_reply", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", mailer.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", mailer.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_sends_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_sends_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sends_organization_id_organizations"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sends")),
        sa.UniqueConstraint(
            "campaign_id", "contact_id", name=op.f("uq_sends_campaign_id_contact_id")
        ),
    )
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sends_campaign_id_status"), ["campaign_id", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sends_contact_id_category_sent_at"),
            ["contact_id", "category", "sent_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_sends_status_lease_expires_at"),
            ["status", "lease_expires_at"],
            unique=False,
        )


def downgrade() -> None:

    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sends_status_lease_expires_at"))
        batch_op.drop_index(batch_op.f("ix_sends_contact_id_category_sent_at"))
        batch_op.drop_index(batch_op.f("ix_sends_campaign_id_status"))

    op.drop_table("sends")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaigns_status_scheduled_at"))

    op.drop_table("campaigns")
