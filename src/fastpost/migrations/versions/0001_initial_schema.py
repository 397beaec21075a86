"""Initial schema: users, posts, follows, likes, and full-text search on posts.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from fastpost.ids import first_id

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id_column(shard_id: int) -> sa.Column[int]:
    if op.get_bind().dialect.name == "postgresql":
        # Each shard numbers from the start of its own range: ids stay unique across shards
        # and below 2**53 (fastpost.ids explains the layout).
        return sa.Column(
            "id", sa.BigInteger, sa.Identity(start=first_id(shard_id)), primary_key=True
        )
    # SQLite: INTEGER PRIMARY KEY is the rowid, numbered from 1 (shard 0).
    return sa.Column("id", sa.Integer, primary_key=True)


def _ref() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    shard_id = int(context.config.attributes.get("shard_id", 0))
    dialect = op.get_bind().dialect.name

    op.create_table(
        "users",
        _id_column(shard_id),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("bio", sa.Text),
        sa.Column("image", sa.String(2048)),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_index(
        "ix_users_email_active",
        "users",
        ["email"],
        postgresql_where=sa.text("is_active"),
        sqlite_where=sa.text("is_active"),
    )

    op.create_table(
        "posts",
        _id_column(shard_id),
        sa.Column(
            "author_id", _ref(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("likes_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("status IN ('draft', 'published')", name="ck_posts_status"),
        sa.CheckConstraint("likes_count >= 0", name="ck_posts_likes_count"),
    )
    op.create_index(
        "ix_posts_author_created",
        "posts",
        ["author_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_posts_status_created",
        "posts",
        ["status", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_posts_status_likes",
        "posts",
        ["status", sa.text("likes_count DESC"), sa.text("id DESC")],
    )

    op.create_table(
        "follows",
        sa.Column(
            "follower_id",
            _ref(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "followee_id",
            _ref(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        _timestamp("created_at"),
        sa.CheckConstraint("follower_id <> followee_id", name="ck_follows_not_self"),
    )
    op.create_index("ix_follows_followee", "follows", ["followee_id", "follower_id"])

    op.create_table(
        "likes",
        sa.Column(
            "user_id", _ref(), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "post_id", _ref(), sa.ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
        ),
        _timestamp("created_at"),
    )
    op.create_index("ix_likes_post", "likes", ["post_id"])

    if dialect == "postgresql":
        # A stored vector so ranking reads it instead of re-parsing every matching post.
        op.execute(
            "ALTER TABLE posts ADD COLUMN search_vector tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', title || ' ' || content)) STORED"
        )
        op.execute("CREATE INDEX ix_posts_search ON posts USING gin (search_vector)")
    elif dialect == "sqlite":
        # An external-content FTS5 index over posts, kept in sync by triggers so that no
        # code path can forget it.
        op.execute(
            "CREATE VIRTUAL TABLE posts_fts USING fts5("
            "title, content, content='posts', content_rowid='id', "
            "tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER posts_fts_insert AFTER INSERT ON posts BEGIN "
            "INSERT INTO posts_fts(rowid, title, content) "
            "VALUES (new.id, new.title, new.content); END"
        )
        op.execute(
            "CREATE TRIGGER posts_fts_delete AFTER DELETE ON posts BEGIN "
            "INSERT INTO posts_fts(posts_fts, rowid, title, content) "
            "VALUES ('delete', old.id, old.title, old.content); END"
        )
        op.execute(
            "CREATE TRIGGER posts_fts_update AFTER UPDATE OF title, content ON posts BEGIN "
            "INSERT INTO posts_fts(posts_fts, rowid, title, content) "
            "VALUES ('delete', old.id, old.title, old.content); "
            "INSERT INTO posts_fts(rowid, title, content) "
            "VALUES (new.id, new.title, new.content); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("posts_fts_insert", "posts_fts_delete", "posts_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS posts_fts")
    op.drop_table("likes")
    op.drop_table("follows")
    op.drop_table("posts")
    op.drop_table("users")
