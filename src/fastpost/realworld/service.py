"""The RealWorld API's shapes over fastpost's services: articles, profiles and comments as
the API names them, its timestamps and envelopes, and its cached entries.

Nothing here builds a select: every post read is the read model's (fastpost.posts.queries),
asked for the columns this API shows (the author's bio, `following`; no body in lists;
timestamps written by PostgreSQL itself), and every write is the domain services' write
program, which returns what is needed to answer with at most one read back, in this API's
shape. A read is one statement whatever the page size: a list carries its total
(`articlesCount`, read from the post_counts counters) in each row; only a page past the end,
which has no row to carry it, asks for the total on its own.

The first page of the unfiltered list, as an anonymous caller sees it, is what a front
end's home page loads: it is cached as response bytes under the same tags as the native
first page (cache_keys.FIRST_PAGES, and the user tag of each author shown), so the writes
that drop one drop the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError

from fastpost import cache_keys, fragments
from fastpost.cache import Cache, Entry
from fastpost.comments import service as comments_service
from fastpost.db import Database, Row
from fastpost.errors import NotFound
from fastpost.posts import queries
from fastpost.posts import service as posts_service
from fastpost.posts import tags as post_tags_service
from fastpost.posts.models import PostStatus
from fastpost.posts.queries import PostRead, PostRef
from fastpost.posts.service import LIST_TTL
from fastpost.responses import dump_json
from fastpost.social import service as social_service
from fastpost.timeutil import as_utc
from fastpost.users import service as users_service
from fastpost.writes import Step, WriteProgram

_PUBLISHED = PostStatus.published.value


def iso_ms(moment: datetime) -> str:
    """2026-01-01T00:00:00.000Z: the API's timestamps, always with milliseconds and zone."""
    moment = as_utc(moment)
    # isoformat ends in "+00:00" for UTC; it takes about a third less time than strftime
    # (python -m timeit, one against the other on the same datetime).
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def api_timestamp(value: str | datetime) -> str:
    """A timestamp as the API writes it: PostgreSQL's reads hand it over written already
    (PostRead.iso_timestamps), SQLite's as a datetime."""
    return value if isinstance(value, str) else iso_ms(value)


@cache
def post_read(dialect: str, *, body: bool, viewer: bool) -> PostRead:
    """What this API reads of a post: an article (with its body) or a list item, with the
    caller's favorited and author.following or without."""
    return PostRead(
        viewer=viewer,
        following=viewer,
        content=body,
        # An article's status tells a shared entry from the author's own draft.
        status=body,
        author_bio=True,
        iso_timestamps=dialect == "postgresql",
    )


@cache
def _article_statement(dialect: str, with_viewer: bool) -> Select[Any]:
    return queries.post_statement(post_read(dialect, body=True, viewer=with_viewer), "slug")


def article_dict(row: Row, *, with_body: bool) -> dict[str, Any]:
    """An article as the API shows it (lists leave the body out)."""
    article: dict[str, Any] = {
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "tagList": post_tags_service.tag_list(row["tag_names"]),
        "createdAt": api_timestamp(row["created_at"]),
        "updatedAt": api_timestamp(row["updated_at"]),
        "favorited": bool(row.get("liked_by_me", False)),
        "favoritesCount": row["likes_count"],
        "author": {
            "username": row["author_username"],
            "bio": row["author_bio"],
            "image": row["author_image"],
            "following": bool(row.get("following", False)),
        },
    }
    if with_body:
        article["body"] = row["content"]
    return article


async def rows_and_total(
    db: Database, page: Select[Any], count: Select[Any], params: Mapping[str, Any]
) -> tuple[Sequence[Row], int]:
    rows = await db.fetch_all(page, params)
    if rows:
        return rows, int(rows[0]["total"])
    totals = await db.fetch_all(count, params)
    return rows, int(totals[0]["total"]) if totals else 0


def articles_page(rows: Sequence[Row], total: int) -> dict[str, Any]:
    return {
        "articles": [article_dict(row, with_body=False) for row in rows],
        "articlesCount": total,
    }


def list_statements(
    read: PostRead, *, tag: bool, author: bool, liked_by: queries.LikedByFilter, offset: bool
) -> tuple[Select[Any], Select[Any]]:
    """The article list's page (with its total) and the total alone, for these filters."""
    by_author: queries.AuthorFilter = "username" if author else None
    page = queries.list_statement(
        read,
        tag=tag,
        author=by_author,
        liked_by=liked_by,
        shape=(False, offset),
        total=True,
    )
    return page, queries.count_statement(tag=tag, author=by_author, liked_by=liked_by)


@cache
def _list_statements(
    dialect: str, viewer: bool, tag: bool, author: bool, favorited: bool, offset: bool
) -> tuple[Select[Any], Select[Any]]:
    """The page (with its total) and the total alone, for these filters (one lookup per
    request: cached by shape, positionally)."""
    read = post_read(dialect, body=False, viewer=viewer)
    return list_statements(read, tag=tag, author=author, liked_by=favorited, offset=offset)


async def list_articles(
    *,
    db: Database,
    viewer_id: int | None,
    tag: str | None,
    author: str | None,
    favorited: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Return a page of published articles, newest first, and how many match in all."""
    page, count = _list_statements(
        db.dialect,
        viewer_id is not None,
        tag is not None,
        author is not None,
        favorited is not None,
        offset > 0,
    )
    params = {
        "viewer_id": viewer_id,
        "status": _PUBLISHED,
        "tag": tag,
        "author": author,
        "liked_by": favorited,
        "limit": limit,
        "offset": offset,
    }
    return articles_page(*await rows_and_total(db, page, count, params))


def _first_articles(dialect: str, *, viewer: bool) -> tuple[Select[Any], Select[Any]]:
    return _list_statements(dialect, viewer, False, False, False, False)


async def cached_first_page(
    cache: Cache, limit: int, read_page: Callable[[], Awaitable[tuple[Sequence[Row], int]]]
) -> Entry:
    """The home page's cached entry, loaded from read_page's rows and total on a miss."""

    async def load() -> Entry:
        return first_articles_entry(*await read_page())

    key = cache_keys.first_articles(limit)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[cache_keys.FIRST_PAGES])


async def cached_first_articles(*, db: Database, cache: Cache, limit: int) -> Entry:
    """The newest published articles, unfiltered, as an anonymous caller sees them."""

    async def read_page() -> tuple[Sequence[Row], int]:
        params = {"viewer_id": None, "status": _PUBLISHED, "limit": limit}
        page, count = _first_articles(db.dialect, viewer=False)
        return await rows_and_total(db, page, count, params)

    return await cached_first_page(cache, limit, read_page)


def first_articles_entry(rows: Sequence[Row], total: int) -> Entry:
    authors = sorted({cache_keys.user_tag(row["author_id"]) for row in rows})
    page = articles_page(rows, total)
    # Rows read for a logged-in caller carry their flags: the shared page has none.
    page["articles"] = [_anonymous(article) for article in page["articles"]]
    return Entry.of(dump_json(page), tags=authors)


async def feed(*, db: Database, viewer_id: int, limit: int, offset: int) -> dict[str, Any]:
    """Return a page of articles by the authors the caller follows, newest first."""
    read = post_read(db.dialect, body=False, viewer=True)
    page = queries.feed_statement(db.dialect, read, (False, offset > 0), total=True)
    params = {"viewer_id": viewer_id, "limit": limit, "offset": offset}
    return articles_page(*await rows_and_total(db, page, queries.feed_count_statement(), params))


async def get_article(*, db: Database, viewer_id: int | None, slug: str) -> dict[str, Any]:
    """Return one article with its body."""
    stmt = _article_statement(db.dialect, viewer_id is not None)
    row = await db.fetch_one(stmt, {"slug": slug, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("not found", code="article_not_found", field="article")
    return article_dict(row, with_body=True)


# Cached for every caller: an article by slug and the tags in use, as anonymous callers see
# them (response bytes with an ETag). A logged-in caller is served the same entries of an
# article and of the home page, with their favorited and author.following, and a fresh
# favoritesCount, read by one statement for the page's slugs (the native posts do the same
# and say why: fastpost.posts.service, "For a logged-in caller").


def _anonymous(article: dict[str, Any]) -> dict[str, Any]:
    """The article as a caller who follows and favorites nothing sees it."""
    return {**article, "favorited": False, "author": {**article["author"], "following": False}}


def _article_entry(row: Row) -> Entry:
    article = _anonymous(article_dict(row, with_body=True))
    # Every write to the post drops its post tag (update, delete, favorite: posts.service
    # stale_after_post_write), and a change of its author's profile drops the author's tag.
    return Entry.of(
        dump_json({"article": article}),
        tags=[cache_keys.post_tag(row["id"]), cache_keys.user_tag(row["author_id"])],
    )


async def cached_article(*, db: Database, cache: Cache, slug: str) -> Entry:
    """One published article, with its body, as an anonymous caller sees it."""

    async def load() -> Entry:
        row = await db.fetch_one(_article_statement(db.dialect, False), {"slug": slug})
        if row is None:
            raise NotFound("not found", code="article_not_found", field="article")
        return _article_entry(row)

    return await cache.get_or_load(cache_keys.article(slug), load, ttl=posts_service.POST_TTL)


async def cached_tags_of(cache: Cache, list_tags: Callable[[], Awaitable[Sequence[str]]]) -> Entry:
    """The tags in use, in the API's envelope, cached; list_tags reads them on a miss."""

    async def load() -> Entry:
        return Entry.of(dump_json({"tags": await list_tags()}))

    return await cache.get_or_load(
        cache_keys.realworld_tags(),
        load,
        ttl=post_tags_service.TAGS_TTL,
        tags=[cache_keys.TAGS_IN_USE],
    )


async def cached_tags(*, db: Database, cache: Cache) -> Entry:
    """The tags in use, in the API's envelope, the same for every caller."""
    return await cached_tags_of(cache, lambda: post_tags_service.list_tags(db=db))


_PER_VIEWER = ("favorited", "favoritesCount", "following")
_ARTICLES = "realworld"  # the name of an entry's fragments (fastpost.fragments.derived)


def _article_end(row: Row) -> bytes:
    return b',"following":%s},"favorited":%s,"favoritesCount":%d}' % (
        b"true" if row["following"] else b"false",
        b"true" if row["liked_by_me"] else b"false",
        row["likes_count"],
    )


def _ends_of(rows: Sequence[Row]) -> dict[str, bytes]:
    return {row["slug"]: _article_end(row) for row in rows}


async def _viewer_ends(db: Database, viewer_id: int, slugs: list[str]) -> dict[str, bytes]:
    """Each article's end as the viewer sees it; one gone or hidden since has none."""
    if not slugs:
        return {}
    stmt = queries.viewer_flags_statement(db.dialect, "slug", with_following=True)
    rows = await db.fetch_all(stmt, {"slugs": slugs, "viewer_id": viewer_id})
    return _ends_of([row for row in rows if row["visible"]])


def _start(article: dict[str, Any]) -> tuple[str, bytes]:
    start = fragments.item_start(article, drop=_PER_VIEWER, nested_last="author")
    return article["slug"], start


def _split_article(body: bytes) -> fragments.Fragments[str]:
    return fragments.Fragments(b'{"article":', (_start(orjson.loads(body)["article"]),), b"}")


def _split_articles(body: bytes) -> fragments.Fragments[str]:
    page = orjson.loads(body)
    tail = b'],"articlesCount":%d}' % page["articlesCount"]
    return fragments.Fragments(b'{"articles":[', tuple(map(_start, page["articles"])), tail)


class _OwnDraft(NotFound):
    """An article only its author may see: not for the shared cache (as absent to every
    other caller waiting on the same load)."""


async def article_for_viewer(*, db: Database, cache: Cache, viewer_id: int, slug: str) -> bytes:
    """One article as the viewer sees it: the shared entry, with their flags."""
    loaded: list[Row] = []

    async def load() -> Entry:
        stmt = _article_statement(db.dialect, True)
        row = await db.fetch_one(stmt, {"slug": slug, "viewer_id": viewer_id})
        loaded.append(row or {})
        if row is None:
            raise NotFound("not found", code="article_not_found", field="article")
        if row["status"] != _PUBLISHED:
            raise _OwnDraft("not found", code="article_not_found", field="article")
        return _article_entry(row)

    try:
        entry = await cache.get_or_load(cache_keys.article(slug), load, ttl=posts_service.POST_TTL)
    except NotFound:
        if not loaded:
            # Another request's load (anonymous: published articles only) found nothing;
            # the article may still be this caller's draft.
            return dump_json({"article": await get_article(db=db, viewer_id=viewer_id, slug=slug)})
        if not loaded[0]:
            raise
        return dump_json({"article": article_dict(loaded[0], with_body=True)})
    shared = fragments.derived(entry, _ARTICLES, _split_article)
    ends = _ends_of(loaded) if loaded else await _viewer_ends(db, viewer_id, [slug])
    if slug not in ends:
        raise NotFound("not found", code="article_not_found", field="article")
    return shared.complete(ends)


async def first_articles_for_viewer(
    *, db: Database, cache: Cache, viewer_id: int, limit: int
) -> bytes:
    """The home page of cached_first_articles as the viewer sees it: the shared entry, with
    their flags."""
    loaded: list[Row] = []

    async def load() -> Entry:
        params = {"viewer_id": viewer_id, "status": _PUBLISHED, "limit": limit}
        page, count = _first_articles(db.dialect, viewer=True)
        rows, total = await rows_and_total(db, page, count, params)
        loaded.extend(rows)
        return first_articles_entry(rows, total)

    key = cache_keys.first_articles(limit)
    entry = await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[cache_keys.FIRST_PAGES])
    shared = fragments.derived(entry, _ARTICLES, _split_articles)
    ends = _ends_of(loaded) if loaded else await _viewer_ends(db, viewer_id, shared.keys)
    return shared.complete(ends)


def new_article(post: Mapping[str, Any], author_bio: str | None) -> dict[str, Any]:
    """A post just created (posts.service.create_post) as an article: nobody has
    favorited it yet, and its author cannot follow themselves."""
    created = iso_ms(post["created_at"])
    return {
        "slug": post["slug"],
        "title": post["title"],
        "description": post["description"],
        "tagList": post["tags"],
        "createdAt": created,
        "updatedAt": created,
        "favorited": False,
        "favoritesCount": 0,
        "author": {
            "username": post["author"]["username"],
            "bio": author_bio,
            "image": post["author"]["image"],
            "following": False,
        },
        "body": post["content"],
    }


def _article_by_id(dialect: str, user_id: int, post_id: int) -> Step:
    """The article as its writer now sees it, read back in the write's transaction: on the
    primary, with what it just wrote."""
    read = post_read(dialect, body=True, viewer=True)
    return Step(queries.post_statement(read, "id"), {"post_id": post_id, "viewer_id": user_id})


def _written_article(dialect: str, row: Any) -> dict[str, Any]:
    article = dict(row)
    if dialect != "postgresql":
        # The writer's rows come straight from sqlite3: timestamps as stored, as text.
        for name in ("created_at", "updated_at"):
            article[name] = datetime.fromisoformat(article[name])
    return article_dict(article, with_body=True)


def _favorite(
    dialect: str, *, user_id: int, slug: str, favorite: bool
) -> WriteProgram[tuple[int, int, bool, Any]]:
    post_id, author_id, _, changed = yield from posts_service.set_like(
        dialect, user_id=user_id, post=PostRef.by_slug(slug), liked=favorite
    )
    (article,) = yield _article_by_id(dialect, user_id, post_id)
    return post_id, author_id, changed, article


async def favorite(
    *, db: Database, cache: Cache, user_id: int, slug: str, favorite: bool
) -> dict[str, Any]:
    """Favorite (or not) an article as the caller, and return it as they now see it."""
    try:
        post_id, author_id, changed, row = await db.write(
            _favorite(db.dialect, user_id=user_id, slug=slug, favorite=favorite)
        )
    except IntegrityError:
        # The article or the account was deleted meanwhile.
        raise NotFound("not found", code="article_not_found", field="article") from None
    if changed:
        await posts_service.invalidate_like(cache, post_id=post_id, author_id=author_id)
    return _written_article(db.dialect, row)


def _update_article(
    dialect: str, *, user_id: int, slug: str, changes: dict[str, Any], tags: list[str] | None
) -> WriteProgram[tuple[int, Any]]:
    post = PostRef.by_slug(slug)
    if changes or tags is not None:
        post_id = yield from posts_service.update_steps(
            dialect, user_id=user_id, post=post, changes=changes, tags=tags, if_match=None
        )
    else:
        # Nothing to change: the checks alone (404, 403), then the article as it is.
        post_id, _, _ = yield from posts_service.own_post(user_id=user_id, post=post)
    (article,) = yield _article_by_id(dialect, user_id, post_id)
    return post_id, article


async def update_article(
    *,
    db: Database,
    cache: Cache,
    user_id: int,
    slug: str,
    changes: dict[str, Any],
    tags: list[str] | None,
) -> dict[str, Any]:
    """Apply the author's changes to an article; return it as they now see it."""
    post_id, row = await db.write(
        _update_article(db.dialect, user_id=user_id, slug=slug, changes=changes, tags=tags)
    )
    if changes or tags is not None:
        await posts_service.invalidate_update(
            cache, post_id=post_id, author_id=user_id, changes=changes, tags=tags
        )
    return _written_article(db.dialect, row)


async def delete_article(*, db: Database, cache: Cache, user_id: int, slug: str) -> None:
    """Delete the author's article, with its comments, tags and favorites."""
    await posts_service.delete_post(db=db, cache=cache, user_id=user_id, post=PostRef.by_slug(slug))


async def add_comment(*, db: Database, slug: str, user_id: int, body: str) -> dict[str, Any]:
    """Comment on the article as the caller; return the comment with its author."""
    return await comments_service.add_comment(
        db=db, post=PostRef.by_slug(slug), author_id=user_id, body=body
    )


async def delete_comment(*, db: Database, slug: str, comment_id: int, user_id: int) -> None:
    """Delete the caller's comment on the article."""
    await comments_service.delete_comment(
        db=db, post=PostRef.by_slug(slug), comment_id=comment_id, user_id=user_id
    )


async def published_post_id(*, db: Database, slug: str) -> int:
    """Return the id of the published post with this slug (404 if none)."""
    return await posts_service.visible_post_id(db=db, viewer_id=None, post=PostRef.by_slug(slug))


async def cached_user(*, db: Database, cache: Cache, user_id: int) -> dict[str, Any]:
    """The user's account as the login and the account check cache it (users.cached_me)."""
    me: dict[str, Any] = orjson.loads(
        await users_service.cached_me(db=db, cache=cache, user_id=user_id)
    )
    return me


def profile_dict(row: Row) -> dict[str, Any]:
    return {
        "username": row["username"],
        "bio": row["bio"],
        "image": row["image"],
        "following": bool(row["following"]),
    }


async def get_profile(*, db: Database, viewer_id: int | None, username: str) -> dict[str, Any]:
    """Return a user's profile and whether the caller follows them."""
    row = await social_service.profile_by_username(db=db, viewer_id=viewer_id, username=username)
    return profile_dict(row)


async def change_follow(
    *, db: Database, cache: Cache, viewer_id: int, username: str, follow: bool
) -> dict[str, Any]:
    """Follow (or stop following) a user by name; return their profile as the caller now
    sees it."""
    target = await social_service.change_follow_by_username(
        db=db, cache=cache, follower_id=viewer_id, username=username, follow=follow
    )
    return profile_dict({**target, "following": follow})


def comment_dict(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "createdAt": iso_ms(row["created_at"]),
        "updatedAt": iso_ms(row["updated_at"]),
        "body": row["body"],
        "author": {
            "username": row["author_username"],
            "bio": row["author_bio"],
            "image": row["author_image"],
            "following": bool(row.get("following", False)),
        },
    }
