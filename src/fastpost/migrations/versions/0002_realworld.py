"""Slugs, descriptions, tags, comments, and exact per-filter counts of published posts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

`post_counts` holds, for each list filter (all, author, tag, liked-by user), how many
published posts it matches. Triggers keep it exact in the transaction of every write that
changes it, so a list's total (RealWorld's `articlesCount`) is a primary-key read at any
table size instead of a count(*) over the filtered set. Deleting a post adjusts its tags'
and likers' counts in a BEFORE trigger, while those rows are still there; the post_tags and
likes triggers count only rows whose post still exists, so the cascade that follows does
not count them twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from fastpost.ids import first_id

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _id_column(shard_id: int) -> sa.Column[int]:
    if op.get_bind().dialect.name == "postgresql":
        return sa.Column(
            "id", sa.BigInteger, sa.Identity(start=first_id(shard_id)), primary_key=True
        )
    return sa.Column("id", sa.Integer, primary_key=True)


def _ref() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


# Statements shared by both dialects, with NEW/OLD as each trigger sees them. `delta` is
# +1 or -1; every change is an upsert so that a first post, tag or like makes its row.
_UPSERT = (
    "INSERT INTO post_counts (kind, ref_id, n) {source} "
    "ON CONFLICT (kind, ref_id) DO UPDATE SET n = post_counts.n + excluded.n"
)


def _add(kind: str, ref: str, delta: str) -> str:
    return _UPSERT.format(source=f"VALUES ('{kind}', {ref}, {delta})")


def _add_tags_and_likers(post: str, delta: str) -> list[str]:
    # "WHERE" also keeps SQLite from reading ON CONFLICT as a join constraint.
    return [
        _UPSERT.format(source=f"SELECT 't', tag_id, {delta} FROM post_tags WHERE post_id = {post}"),
        _UPSERT.format(source=f"SELECT 'f', user_id, {delta} FROM likes WHERE post_id = {post}"),
    ]


def _published(post: str) -> str:
    return f"EXISTS (SELECT 1 FROM posts WHERE id = {post} AND status = 'published')"


def _post_changes(row: str, delta: str) -> list[str]:
    return [_add("a", "0", delta), _add("u", f"{row}.author_id", delta)]


def _sqlite_triggers() -> list[str]:
    def trigger(name: str, when: str, body: list[str]) -> str:
        return f"CREATE TRIGGER {name} {when} BEGIN {'; '.join(body)}; END"

    return [
        trigger(
            "posts_count_insert",
            "AFTER INSERT ON posts WHEN new.status = 'published'",
            _post_changes("new", "1"),
        ),
        trigger(
            "posts_count_delete",
            "BEFORE DELETE ON posts WHEN old.status = 'published'",
            _post_changes("old", "-1") + _add_tags_and_likers("old.id", "-1"),
        ),
        trigger(
            "posts_count_publish",
            "AFTER UPDATE OF status ON posts "
            "WHEN old.status <> 'published' AND new.status = 'published'",
            _post_changes("new", "1") + _add_tags_and_likers("new.id", "1"),
        ),
        trigger(
            "posts_count_unpublish",
            "AFTER UPDATE OF status ON posts "
            "WHEN old.status = 'published' AND new.status <> 'published'",
            _post_changes("new", "-1") + _add_tags_and_likers("new.id", "-1"),
        ),
        trigger(
            "post_tags_count_insert",
            f"AFTER INSERT ON post_tags WHEN {_published('new.post_id')}",
            [_add("t", "new.tag_id", "1")],
        ),
        trigger(
            "post_tags_count_delete",
            f"AFTER DELETE ON post_tags WHEN {_published('old.post_id')}",
            [_add("t", "old.tag_id", "-1")],
        ),
        trigger(
            "likes_count_insert",
            f"AFTER INSERT ON likes WHEN {_published('new.post_id')}",
            [_add("f", "new.user_id", "1")],
        ),
        trigger(
            "likes_count_delete",
            f"AFTER DELETE ON likes WHEN {_published('old.post_id')}",
            [_add("f", "old.user_id", "-1")],
        ),
    ]


def _pg_function(name: str, body: str, returns: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{body} RETURN {returns}; END $$"
    )


def _pg_statements() -> list[str]:
    def block(statements: list[str]) -> str:
        return " ".join(f"{s};" for s in statements)

    return [
        _pg_function(
            "posts_count_insert",
            f"IF NEW.status = 'published' THEN {block(_post_changes('NEW', '1'))} END IF;",
            "NULL",
        ),
        _pg_function(
            "posts_count_delete",
            "IF OLD.status = 'published' THEN "
            f"{block(_post_changes('OLD', '-1') + _add_tags_and_likers('OLD.id', '-1'))} "
            "END IF;",
            "OLD",
        ),
        _pg_function(
            "posts_count_status",
            "IF OLD.status <> 'published' AND NEW.status = 'published' THEN "
            f"{block(_post_changes('NEW', '1') + _add_tags_and_likers('NEW.id', '1'))} "
            "ELSIF OLD.status = 'published' AND NEW.status <> 'published' THEN "
            f"{block(_post_changes('NEW', '-1') + _add_tags_and_likers('NEW.id', '-1'))} "
            "END IF;",
            "NULL",
        ),
        _pg_function(
            "post_tags_count",
            "IF TG_OP = 'INSERT' THEN "
            f"IF {_published('NEW.post_id')} THEN {_add('t', 'NEW.tag_id', '1')}; END IF; "
            f"ELSIF {_published('OLD.post_id')} THEN {_add('t', 'OLD.tag_id', '-1')}; END IF;",
            "NULL",
        ),
        _pg_function(
            "likes_count",
            "IF TG_OP = 'INSERT' THEN "
            f"IF {_published('NEW.post_id')} THEN {_add('f', 'NEW.user_id', '1')}; END IF; "
            f"ELSIF {_published('OLD.post_id')} THEN {_add('f', 'OLD.user_id', '-1')}; END IF;",
            "NULL",
        ),
        "CREATE TRIGGER posts_count_insert AFTER INSERT ON posts "
        "FOR EACH ROW EXECUTE FUNCTION posts_count_insert()",
        "CREATE TRIGGER posts_count_delete BEFORE DELETE ON posts "
        "FOR EACH ROW EXECUTE FUNCTION posts_count_delete()",
        "CREATE TRIGGER posts_count_status AFTER UPDATE OF status ON posts "
        "FOR EACH ROW EXECUTE FUNCTION posts_count_status()",
        "CREATE TRIGGER post_tags_count AFTER INSERT OR DELETE ON post_tags "
        "FOR EACH ROW EXECUTE FUNCTION post_tags_count()",
        "CREATE TRIGGER likes_count AFTER INSERT OR DELETE ON likes "
        "FOR EACH ROW EXECUTE FUNCTION likes_count()",
    ]


# Counts of what is already there, in one pass per filter kind.
_BACKFILL = [
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 'a', 0, count(*) FROM posts WHERE status = 'published'",
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 'u', author_id, count(*) FROM posts WHERE status = 'published' GROUP BY author_id",
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 'f', likes.user_id, count(*) FROM likes JOIN posts ON posts.id = likes.post_id "
    "WHERE posts.status = 'published' GROUP BY likes.user_id",
]


def upgrade() -> None:
    shard_id = int(context.config.attributes.get("shard_id", 0))
    dialect = op.get_bind().dialect.name

    # Plain ALTERs rather than Alembic's batch mode: on SQLite that copies the table and
    # drops the original, which would take the full-text triggers and (foreign keys being
    # on) the likes with it. Existing posts get a slug from their id, unique as the id is.
    if dialect == "postgresql":
        op.add_column("posts", sa.Column("slug", sa.String(100)))
        op.execute("UPDATE posts SET slug = 'post-' || id")
        op.alter_column("posts", "slug", nullable=False)
    else:
        # SQLite adds a NOT NULL column only with a default; every insert gives a slug.
        op.add_column("posts", sa.Column("slug", sa.String(100), nullable=False, server_default=""))
        op.execute("UPDATE posts SET slug = 'post-' || id")
    op.add_column(
        "posts", sa.Column("description", sa.String(500), nullable=False, server_default="")
    )
    op.create_index("uq_posts_slug", "posts", ["slug"], unique=True)

    op.create_table(
        "tags",
        _id_column(shard_id),
        sa.Column("name", sa.String(64), nullable=False),
        sa.UniqueConstraint("name", name="uq_tags_name"),
    )
    op.create_table(
        "post_tags",
        sa.Column(
            "post_id", _ref(), sa.ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("tag_id", _ref(), sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_index("ix_post_tags_tag", "post_tags", ["tag_id", "post_id"])

    op.create_table(
        "comments",
        _id_column(shard_id),
        sa.Column("post_id", _ref(), sa.ForeignKey("posts.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "author_id", _ref(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_comments_post_created", "comments", ["post_id", sa.text("created_at DESC")])

    op.create_table(
        "post_counts",
        sa.Column("kind", sa.String(1), primary_key=True),
        sa.Column("ref_id", _ref(), primary_key=True),
        sa.Column("n", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    for statement in _BACKFILL:
        op.execute(statement)
    for statement in _pg_statements() if dialect == "postgresql" else _sqlite_triggers():
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table, trigger in (
            ("posts", "posts_count_insert"),
            ("posts", "posts_count_delete"),
            ("posts", "posts_count_status"),
            ("post_tags", "post_tags_count"),
            ("likes", "likes_count"),
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        for function in (
            "posts_count_insert",
            "posts_count_delete",
            "posts_count_status",
            "post_tags_count",
            "likes_count",
        ):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for trigger in (
            "posts_count_insert",
            "posts_count_delete",
            "posts_count_publish",
            "posts_count_unpublish",
            "post_tags_count_insert",
            "post_tags_count_delete",
            "likes_count_insert",
            "likes_count_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_table("post_counts")
    op.drop_table("comments")
    op.drop_table("post_tags")
    op.drop_table("tags")
    op.drop_index("uq_posts_slug", "posts")
    op.drop_column("posts", "description")
    op.drop_column("posts", "slug")
