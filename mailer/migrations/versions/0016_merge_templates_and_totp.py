"""merge: stored templates (0014) and sealed TOTP secrets (0015), both written after 0013

Revision ID: 0016
Revises: 0014, 0015
Create Date: 2026-11-30
"""

revision = "0016"
down_revision = ("0014", "0015")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the two branches touch different tables."""


def downgrade() -> None:
    """Nothing to undo here; each branch's own downgrade undoes its tables."""
