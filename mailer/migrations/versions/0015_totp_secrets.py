"""totp_secrets: TOTP secrets sealed at rest (AES-256-GCM under MAILER_SECRET_KEY)

The column widens to hold a sealed value. When the migration runs with the secret keys
(`mailer db upgrade` passes them), every secret still stored in clear is sealed here. Run
without them (a bare `mailer.db.upgrade(engine)`), clear secrets stay as they are: mailer
reads them as before and seals each one the next time its owner signs in with a code, so
nobody is locked out either way.

Revision ID: 0015
Revises: 0013
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import context, op

from mailer.access.totp import SEAL_PURPOSE, where
from mailer.sealing import Sealer, is_sealed

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_users = sa.table("users", sa.column("id", sa.Integer()), sa.column("totp_secret", sa.String(200)))


def _sealer() -> Sealer | None:
    keys = context.config.attributes.get("secret_keys") or []
    return Sealer(keys, purpose=SEAL_PURPOSE) if any(keys) else None


def _secrets(conn: sa.Connection) -> list[tuple[int, str]]:
    rows = conn.execute(
        sa.select(_users.c.id, _users.c.totp_secret).where(_users.c.totp_secret != "")
    )
    return [(row.id, row.totp_secret) for row in rows]


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "totp_secret",
            existing_type=sa.String(64),
            type_=sa.String(200),
            existing_nullable=False,
            existing_server_default="",
        )
    sealer = _sealer()
    if sealer is None:
        return  # sealed on each user's next sign-in instead (see above)
    conn = op.get_bind()
    for user_id, stored in _secrets(conn):
        if not is_sealed(stored):
            conn.execute(
                _users.update()
                .where(_users.c.id == user_id)
                .values(totp_secret=sealer.seal(stored, where=where(user_id)))
            )


def downgrade() -> None:
    conn = op.get_bind()
    sealed = [(i, s) for i, s in _secrets(conn) if is_sealed(s)]
    sealer = _sealer()
    if sealed and sealer is None:
        raise RuntimeError(
            f"{len(sealed)} TOTP secret(s) are sealed and this downgrade was not given the "
            "secret keys to open them: pass them in the Alembic config attribute 'secret_keys' "
            "(as mailer.db.upgrade does from the settings), or reset those users' TOTP first "
            "(`mailer users reset-totp NAME`)"
        )
    for user_id, stored in sealed:
        assert sealer is not None
        clear = sealer.open(stored, where=where(user_id)).plaintext
        conn.execute(_users.update().where(_users.c.id == user_id).values(totp_secret=clear))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "totp_secret",
            existing_type=sa.String(200),
            type_=sa.String(64),
            existing_nullable=False,
            existing_server_default="",
        )
