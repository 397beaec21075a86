"""Each author's published posts, newest first, in an index of their own, so the feed reads
a short range per followed author without visiting the posts themselves.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

The feed on PostgreSQL takes each followed author's newest published posts (a LATERAL
subquery per follow, fastpost.posts.queries.feed_statement) and keeps the newest of them.
ix_posts_author_created holds every status, so each row it yields had to be fetched from
the table to check that it is published; with the status in the index's predicate the read
is an index-only scan wherever the visibility map says the table's pages are settled. For
the readers `fastpost bench` logs in, on its seed after a VACUUM, a first page touched 333
shared buffers on average (1,003 at most) through ix_posts_author_created and 182 (309)
through this one (`python -m benchmarks.explain_feed`). A partial index holds the
published posts alone; SQLite builds the same one, so that both schemas stay alike.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_posts_author_published"
PUBLISHED = sa.text("status = 'published'")


def upgrade() -> None:
    op.create_index(
        INDEX,
        "posts",
        ["author_id", sa.text("created_at DESC"), sa.text("id DESC")],
        postgresql_where=PUBLISHED,
        sqlite_where=PUBLISHED,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="posts")
