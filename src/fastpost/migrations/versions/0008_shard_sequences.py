"""Sharded mode's schema: one id sequence per logical shard, the shard map, the user directory.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

PostgreSQL only (sharded mode is; on SQLite this does nothing). On every database:
- `fastpost_shard_ids_00` ... `_31`: logical shard L numbers its rows from first_id(L), on
  whichever database hosts L (fastpost.shards). Every database has all 32, so that moving a
  logical shard to another database later needs no schema change there.
- `shard_map`, `shard_map_instances` and `user_directory`: read and written on the first database of
  FASTPOST_DB__SHARDS only (the directory); empty elsewhere.
Unsharded databases keep numbering from their identity columns; the sequences stay unused.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fastpost.ids import MAX_SHARDS, first_id

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def sequence_name(logical: int) -> str:
    return f"fastpost_shard_ids_{logical:02d}"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for logical in range(MAX_SHARDS):
        op.execute(
            f"CREATE SEQUENCE IF NOT EXISTS {sequence_name(logical)} "
            f"START WITH {first_id(logical)} MINVALUE {first_id(logical)} "
            f"MAXVALUE {first_id(logical + 1) - 1 if logical + 1 < MAX_SHARDS else 2**53 - 1}"
        )
    op.create_table(
        "shard_map",
        sa.Column("logical", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("database", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        # ready, moving (being copied elsewhere: writes go on) or frozen (a move's last step)
        sa.Column("state", sa.String(8), nullable=False, server_default="ready"),
    )
    # The instances serving, with the map versions each has applied (fastpost.shards.map_watch)
    op.create_table(
        "shard_map_instances",
        sa.Column("instance", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("versions", sa.ARRAY(sa.BigInteger()), nullable=False),
    )
    op.create_table(
        "user_directory",
        sa.Column("username_lower", sa.String(32), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_table("user_directory")
    op.drop_table("shard_map_instances")
    op.drop_table("shard_map")
    for logical in range(MAX_SHARDS):
        op.execute(f"DROP SEQUENCE IF EXISTS {sequence_name(logical)}")
