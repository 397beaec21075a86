"""Every cache key and cache tag fastpost uses, each built by one function.

A key names one entry; a tag names what an entry shows, so that a write drops every entry it
makes stale (`Cache.invalidate(tags=...)`). Routes, services and the warm-read middleware
(fastpost.http_caching.CachedPostReads) import these instead of spelling a key again: two
spellings of one key would be two entries, and an invalidation that misses one of them.

Keys are joined with ":" by `cache_key`; a part that users choose (a slug, a tag name) goes
last, after a marker, so that no value can make the key of another entry.
"""

from __future__ import annotations

from fastpost.cache import cache_key

# Tags of shared lists: every post write drops them (posts.service.stale_after_post_write).
FIRST_PAGES = "posts:first"
POPULAR = "posts:popular"
# The tags in use (GET /tags/, GET /api/tags), dropped by writes that change which tags are in
# use or how often.
TAGS_IN_USE = "tags"


def user_tag(user_id: int) -> str:
    """Entries showing this user (their profile, posts, lists, overview): a profile edit
    drops them."""
    return f"user:{user_id}"


def post_tag(post_id: int) -> str:
    """Entries showing one post under another key (RealWorld's article by slug): every write
    to the post drops them."""
    return f"post:{post_id}"


def author_posts_tag(author_id: int) -> str:
    """First pages of one author's posts."""
    return f"author:{author_id}:posts"


def following_tag(user_id: int) -> str:
    """Entries that depend on whom a user follows (their feed): their follow or unfollow
    drops them."""
    return f"following:{user_id}"


def overview_tag(user_id: int) -> str:
    """A user's overview (their latest posts and friends)."""
    return f"overview:{user_id}"


def post(post_id: int) -> str:
    """A post as an anonymous caller sees it (GET /posts/{id})."""
    return cache_key("post", post_id)


def first_page(limit: int, author_id: int | None, tag: str | None) -> str:
    """A first page of the newest published posts: everyone's or an author's, with a tag or
    not."""
    tag_part = () if tag is None else ("tag", tag)
    return cache_key("posts", "first", "all" if author_id is None else author_id, limit, *tag_part)


def first_page_tag(author_id: int | None) -> str:
    """The tag a first page's writes drop (a tag filter needs none of its own: every post
    write drops FIRST_PAGES and the author's tag)."""
    return FIRST_PAGES if author_id is None else author_posts_tag(author_id)


def feed(user_id: int, limit: int) -> str:
    """The first page of a reader's feed (GET /feed), its posts as anonymous callers see
    them."""
    return cache_key("feed", user_id, limit)


def popular(limit: int) -> str:
    return cache_key("posts", "popular", limit)


def tags_in_use() -> str:
    return cache_key("tags", "in-use")


def profile(user_id: int) -> str:
    return cache_key("user", user_id)


def me(user_id: int) -> str:
    return cache_key("me", user_id)


def overview(user_id: int) -> str:
    return cache_key("overview", user_id)


def article(slug: str) -> str:
    """A RealWorld article as an anonymous caller sees it (GET /api/articles/{slug})."""
    return cache_key("realworld", "article", slug)


def realworld_tags() -> str:
    """GET /api/tags, in the RealWorld envelope."""
    return cache_key("realworld", "tags")


def first_articles(limit: int) -> str:
    """The RealWorld home page: the first page of articles, unfiltered."""
    return cache_key("realworld", "articles", "first", limit)
