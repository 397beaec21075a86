"""post_counts from scratch, for bulk loads that bypass its triggers (see migration 0002).

Row triggers are right for a request's few writes, but a COPY of a million posts would
update the one 'all posts' row a million times in a single transaction, and PostgreSQL
walks that row's growing chain of versions on each update: quadratic. The seed therefore
disables these triggers for its load and recounts with one aggregate per kind.
"""

from __future__ import annotations

# (table, trigger) on PostgreSQL.
PG_TRIGGERS = (
    ("posts", "posts_count_insert"),
    ("posts", "posts_count_delete"),
    ("posts", "posts_count_status"),
    ("post_tags", "post_tags_count"),
    ("likes", "likes_count"),
)

RECOUNT = (
    "DELETE FROM post_counts",
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 'a', 0, count(*) FROM posts WHERE status = 'published'",
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 'u', author_id, count(*) FROM posts WHERE status = 'published' GROUP BY author_id",
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 't', post_tags.tag_id, count(*) FROM post_tags "
    "JOIN posts ON posts.id = post_tags.post_id "
    "WHERE posts.status = 'published' GROUP BY post_tags.tag_id",
    "INSERT INTO post_counts (kind, ref_id, n) "
    "SELECT 'f', likes.user_id, count(*) FROM likes JOIN posts ON posts.id = likes.post_id "
    "WHERE posts.status = 'published' GROUP BY likes.user_id",
)
