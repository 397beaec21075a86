"""The post_counts triggers that bulk loads switch off (see migration 0002).

Row triggers are right for a request's few writes, but a COPY of a million posts would
update the one 'all posts' row a million times in a single transaction, and PostgreSQL
walks that row's growing chain of versions on each update: quadratic. The seed therefore
disables these triggers for its load and adds what they would have counted itself
(fastpost.seed).
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
