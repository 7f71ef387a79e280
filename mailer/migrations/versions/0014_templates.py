"""templates: stored templates and their versions; campaigns pin a version and keep a snapshot

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from mailer.models import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_templates")),
        sa.UniqueConstraint("category", "name", name=op.f("uq_stored_templates_category_name")),
    )
    op.create_table(
        "template_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("params", sa.String(length=500), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["stored_templates.id"],
            name=op.f("fk_template_versions_template_id_stored_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
        sa.UniqueConstraint(
            "template_id", "number", name=op.f("uq_template_versions_template_id_number")
        ),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("template_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("template_version_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_campaigns_template_id_stored_templates"),
            "stored_templates",
            ["template_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_campaigns_template_version_id_template_versions"),
            "template_versions",
            ["template_version_id"],
            ["id"],
            ondelete="RESTRICT",
        )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.alter_column("subject", server_default=None)
    op.create_table(
        "campaign_snapshots",
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=False),
        sa.Column("template_version_id", sa.Integer(), nullable=True),
        sa.Column("template_version", sa.Integer(), nullable=True),
        sa.Column("subject_source", sa.Text(), nullable=False),
        sa.Column("html_source", sa.Text(), nullable=False),
        sa.Column("text_source", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("sample_email", sa.String(length=320), nullable=False),
        sa.Column("sample_subject", sa.Text(), nullable=False),
        sa.Column("sample_text", sa.Text(), nullable=False),
        sa.Column("sample_html", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_snapshots_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_version_id"],
            ["template_versions.id"],
            name=op.f("fk_campaign_snapshots_template_version_id_template_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("campaign_snapshots")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_campaigns_template_version_id_template_versions"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_campaigns_template_id_stored_templates"), type_="foreignkey"
        )
        batch_op.drop_column("template_version_id")
        batch_op.drop_column("template_id")
        batch_op.drop_column("subject")
    op.drop_table("template_versions")
    op.drop_table("stored_templates")
