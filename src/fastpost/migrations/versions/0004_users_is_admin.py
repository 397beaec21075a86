"""users.is_admin: who may ask any fastpost for a profile of a request (`?profile=1`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Granted and revoked with `fastpost admin grant|revoke USERNAME`; read from the database on
each profiled request (not carried in the token), so a revocation holds at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("users", "is_admin")
