"""Usernames unique without regard to case: `Admin`, `admin` and `ADMIN` are one account.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

A unique index on lower(username), which SQLite (indexes on expressions, 3.9+) and
PostgreSQL both build. Registration and profile edits look names up through it, so a
second spelling of a taken name answers 409 (fastpost.users.service). The exact-case unique
constraint of 0001 stays: the lookups by exact name use it.

A database that already holds two names differing only in case cannot take the index; the
upgrade stops and names them, since renaming someone's account is a decision for a person.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "uq_users_username_lower"


def upgrade() -> None:
    clashes = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT lower(username) AS name, count(*) AS accounts FROM users "
                "GROUP BY lower(username) HAVING count(*) > 1 ORDER BY 1 LIMIT 20"
            )
        )
        .all()
    )
    if clashes:
        names = ", ".join(f"{name} ({accounts} accounts)" for name, accounts in clashes)
        raise RuntimeError(
            "usernames that differ only in case must be renamed before this migration "
            f"(fastpost makes them one name from now on): {names}"
        )
    op.create_index(INDEX, "users", [sa.text("lower(username)")], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="users")
