"""What the posts domain does: list, read, search, write, tag and like posts.

Reads are one statement per request: the page, each post's author, its tags and, for a
logged-in caller, whether they liked it come back in one round trip whatever the page size
(no N+1).
Each read statement is built once per shape (anonymous or not, filtered by author or not,
after a cursor or not) and cached; values travel as bound parameters, so the database layer
compiles it once too (see fastpost.db). Writes run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    bindparam,
    column,
    exists,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost import fragments
from fastpost.bound_lists import one_of
from fastpost.cache import Cache, Entry, cache_key
from fastpost.db import Database, Row, table_of
from fastpost.errors import Forbidden, NotFound, PreconditionFailed, Unauthorized
from fastpost.http_caching import etag_matches, http_date
from fastpost.pagination import Cursor, Page, cut_page, keyset_page
from fastpost.posts import tags as post_tags
from fastpost.posts import writes as post_writes
from fastpost.posts.models import Like, Post, PostStatus
from fastpost.posts.slugs import make_slug
from fastpost.responses import dump_json
from fastpost.timeutil import as_utc, unix_micros, utcnow
from fastpost.users.models import User
from fastpost.writes import Step, WriteProgram, insert_or_ignore

posts = table_of(Post)
likes = table_of(Like)
users = table_of(User)
# SQLite's full-text index (made by the migration, not mapped).
posts_fts = table("posts_fts", column("rowid"), column("rank"))

_POST_COLUMNS = (
    posts.c.id,
    posts.c.slug,
    posts.c.title,
    posts.c.description,
    posts.c.content,
    posts.c.status,
    posts.c.likes_count,
    posts.c.created_at,
    posts.c.updated_at,
    posts.c.author_id,
    users.c.username.label("author_username"),
    users.c.image.label("author_image"),
    post_tags.tag_names_of_post().label("tag_names"),
)
_PUBLISHED: ColumnElement[str] = literal_column(f"'{PostStatus.published.value}'")

PostDict = dict[str, Any]


def select_posts(*, with_viewer: bool) -> Select[Any]:
    """SELECT posts with their author, their tags and, given a :viewer_id, whether they
    liked each."""
    stmt = select(*_POST_COLUMNS).select_from(posts.join(users, users.c.id == posts.c.author_id))
    if with_viewer:
        # A correlated EXISTS probes the likes primary key once per row of the page: the
        # same statement, not a query per post.
        liked = exists().where(
            likes.c.user_id == bindparam("viewer_id", type_=BigInteger),
            likes.c.post_id == posts.c.id,
        )
        stmt = stmt.add_columns(liked.label("liked_by_me"))
    return stmt


def visible_posts(*, with_viewer: bool) -> ColumnElement[bool]:
    """Published posts, plus the :viewer_id's own drafts."""
    published = posts.c.status == _PUBLISHED
    if not with_viewer:
        return published
    return or_(published, posts.c.author_id == bindparam("viewer_id", type_=BigInteger))


def newest_first(stmt: Select[Any], shape: tuple[bool, bool]) -> Select[Any]:
    """Order posts by (created_at, id) descending and page them."""
    return keyset_page(stmt, shape, posts.c.created_at, posts.c.id)


def _cursor_of(row: Row) -> Cursor:
    return Cursor(row["created_at"], row["id"])


def post_dict(row: Row, viewer_id: int | None) -> PostDict:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "content": row["content"],
        "status": row["status"],
        "likes_count": row["likes_count"],
        "tags": post_tags.tag_list(row["tag_names"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "author": {
            "id": row["author_id"],
            "username": row["author_username"],
            "image": row["author_image"],
        },
        "liked_by_me": bool(row["liked_by_me"]) if viewer_id is not None else None,
    }


def post_page(rows: Sequence[Row], page: Page, viewer_id: int | None) -> PostDict:
    items, cursor = cut_page(rows, page.limit, _cursor_of)
    return {"items": [post_dict(r, viewer_id) for r in items], "next_cursor": cursor}


@cache
def _list_statement(
    with_viewer: bool, by_author: bool, by_tag: bool, shape: tuple[bool, bool]
) -> Select[Any]:
    stmt = select_posts(with_viewer=with_viewer).where(posts.c.status == bindparam("status"))
    if by_author:
        stmt = stmt.where(posts.c.author_id == bindparam("author_id", type_=BigInteger))
    if by_tag:
        stmt, created_at, post_id = post_tags.tagged(stmt)
        return keyset_page(stmt, shape, created_at, post_id)
    return newest_first(stmt, shape)


async def list_posts(
    *,
    db: Database,
    viewer_id: int | None,
    page: Page,
    author_id: int | None = None,
    tag: str | None = None,
    status: PostStatus = PostStatus.published,
) -> PostDict:
    """Return a page of posts, newest first, optionally of one author or with one tag."""
    stmt = _list_statement(
        viewer_id is not None, author_id is not None, tag is not None, page.shape
    )
    params = {
        **page.params,
        "viewer_id": viewer_id,
        "author_id": author_id,
        "tag": tag,
        "status": status.value,
    }
    return post_page(await db.fetch_all(stmt, params), page, viewer_id)


@cache
def _detail_statement(with_viewer: bool) -> Select[Any]:
    return select_posts(with_viewer=with_viewer).where(
        posts.c.id == bindparam("post_id", type_=BigInteger), visible_posts(with_viewer=with_viewer)
    )


async def get_post(*, db: Database, viewer_id: int | None, post_id: int) -> PostDict:
    """Return one post; another author's draft is as absent as a missing post."""
    stmt = _detail_statement(viewer_id is not None)
    row = await db.fetch_one(stmt, {"post_id": post_id, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("Post not found", code="post_not_found")
    return post_dict(row, viewer_id)


@cache
def _popular_statement(with_viewer: bool) -> Select[Any]:
    return (
        select_posts(with_viewer=with_viewer)
        .where(posts.c.status == _PUBLISHED)
        .order_by(posts.c.likes_count.desc(), posts.c.id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


async def list_popular_posts(*, db: Database, viewer_id: int | None, limit: int) -> list[PostDict]:
    """Return the most liked published posts."""
    stmt = _popular_statement(viewer_id is not None)
    rows = await db.fetch_all(stmt, {"limit": limit, "viewer_id": viewer_id})
    return [post_dict(r, viewer_id) for r in rows]


def _fts5_query(q: str) -> str:
    # Each word becomes a quoted FTS5 string, so user input is matched as words (all of
    # them) and never parsed as FTS5 syntax (NEAR, column filters, unbalanced quotes).
    return " ".join('"' + word.replace('"', '""') + '"' for word in q.split())


@cache
def _search_statement(dialect: str, with_viewer: bool) -> Select[Any]:
    stmt = select_posts(with_viewer=with_viewer).where(posts.c.status == _PUBLISHED)
    if dialect == "postgresql":
        query = func.websearch_to_tsquery(literal_column("'english'"), bindparam("q"))
        vector: ColumnElement[Any] = literal_column("posts.search_vector")
        stmt = stmt.where(vector.op("@@")(query)).order_by(
            func.ts_rank(vector, query).desc(), posts.c.id.desc()
        )
    else:
        # FTS5's hidden `rank` column is bm25(); ordering by it lets FTS5 sort internally.
        stmt = (
            stmt.join(posts_fts, posts_fts.c.rowid == posts.c.id)
            .where(text("posts_fts MATCH :q"))
            .order_by(posts_fts.c.rank, posts.c.id.desc())
        )
    return stmt.limit(bindparam("limit", type_=Integer)).offset(bindparam("offset", type_=Integer))


async def search_posts(
    *, db: Database, viewer_id: int | None, q: str, limit: int, offset: int
) -> list[PostDict]:
    """Full-text search over published posts' title and content, best match first."""
    if db.dialect != "postgresql":
        q = _fts5_query(q)
        if not q:
            return []
    stmt = _search_statement(db.dialect, viewer_id is not None)
    params = {"q": q, "limit": limit, "offset": offset, "viewer_id": viewer_id}
    return [post_dict(r, viewer_id) for r in await db.fetch_all(stmt, params)]


@cache
def _exists_statement(with_viewer: bool) -> Select[Any]:
    return select(posts.c.id).where(
        posts.c.id == bindparam("post_id", type_=BigInteger), visible_posts(with_viewer=with_viewer)
    )


async def ensure_post_visible(*, db: Database, viewer_id: int | None, post_id: int) -> None:
    """Raise 404 unless the post exists and the viewer may see it."""
    stmt = _exists_statement(viewer_id is not None)
    if await db.fetch_one(stmt, {"post_id": post_id, "viewer_id": viewer_id}) is None:
        raise NotFound("Post not found", code="post_not_found")


# Cached representations, as anonymous callers see them. Logged-in callers are served the
# same entries of a post and of first pages, with their own liked_by_me and a fresh
# likes_count spliced in (see "For a logged-in caller" below). Tags name what an entry
# shows, so that a write drops every entry it makes stale: see stale_after_post_write and
# users.service.
POST_TTL = 300.0  # Redis lifetime; invalidation normally ends an entry long before
LIST_TTL = 30.0


def post_key(post_id: int) -> str:
    return cache_key("post", post_id)


def post_tag(post_id: int) -> str:
    """The tag of entries that show one post under another key (RealWorld's article by
    slug): every write to the post drops it (stale_after_post_write)."""
    return f"post:{post_id}"


def post_etag(post_id: int, updated_at: datetime, likes_count: int) -> str:
    """A version, not a hash: every worker computes it from the row alone, and a PATCH can
    check If-Match against the locked row without rendering anything."""
    return f'"p{post_id}-{unix_micros(updated_at)}-{likes_count}"'


def _post_entry(row: Row) -> Entry:
    return Entry.of(
        dump_json(post_dict(row, None)),
        etag=post_etag(row["id"], row["updated_at"], row["likes_count"]),
        last_modified=http_date(as_utc(row["updated_at"])),
        tags=[f"user:{row['author_id']}"],
    )


def _authors_of(items: list[PostDict]) -> list[str]:
    return sorted({f"user:{item['author']['id']}" for item in items})


async def cached_post(*, db: Database, cache: Cache, post_id: int) -> Entry:
    """A published post as an anonymous caller sees it."""

    async def load() -> Entry:
        row = await db.fetch_one(_detail_statement(False), {"post_id": post_id})
        if row is None:
            raise NotFound("Post not found", code="post_not_found")
        return _post_entry(row)

    return await cache.get_or_load(post_key(post_id), load, ttl=POST_TTL)


async def cached_first_page(
    *,
    db: Database,
    cache: Cache,
    limit: int,
    author_id: int | None = None,
    tag: str | None = None,
) -> Entry:
    """The first page of the newest published posts (of one author, or of everyone; with a
    tag, or not)."""

    async def load() -> Entry:
        page = await list_posts(
            db=db, viewer_id=None, page=Page(limit, None, 0), author_id=author_id, tag=tag
        )
        return Entry.of(dump_json(page), tags=_authors_of(page["items"]))

    key, name = _first_page_key(limit, author_id, tag)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[name])


def _first_page_key(limit: int, author_id: int | None, tag: str | None) -> tuple[str, str]:
    """The cache key of a first page, and the tag its writes drop."""
    # Every post write drops "posts:first" and its author's tag (see stale_after_post_write), so
    # the pages filtered by a tag need no tag of their own: a write that adds or removes a
    # tag, or changes a post that carries one, is such a write.
    name = "posts:first" if author_id is None else f"author:{author_id}:posts"
    key = cache_key(
        "posts", "first", "all" if author_id is None else author_id, limit, *_tag_part(tag)
    )
    return key, name


def _tag_part(tag: str | None) -> tuple[str, ...]:
    # Keys are joined with ":", which a tag name may contain: the name goes last, after a
    # marker, so that no tag can make the key of another filter.
    return () if tag is None else ("tag", tag)


async def cached_popular(*, db: Database, cache: Cache, limit: int) -> Entry:
    """The most liked published posts."""

    async def load() -> Entry:
        items = await list_popular_posts(db=db, viewer_id=None, limit=limit)
        return Entry.of(dump_json(items), tags=_authors_of(items))

    key = cache_key("posts", "popular", limit)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=["posts:popular"])


# For a logged-in caller: the shared entries above, completed with what depends on them.
#
# Their flags, liked_by_me, are read per request by one statement for the page's ids, with
# each post's likes_count read in the same probe of the primary key: a like shows at once in
# its author's next read, liked and counted, from any worker, whatever another worker's
# tier 1 still holds. The alternative, a per-user set of liked ids in Redis kept by the like
# writes, is a Redis round trip instead of a statement: benchmarks/bench_logged_in.py
# measured the statement at 1.5x the CPU of SMISMEMBER alone and 0.9x of SMISMEMBER with an
# MGET of the counts (which the set needs for likes_count to be fresh), and the set would
# be a second copy of the likes table for every like write to keep, and to rebuild whole
# when Redis loses it. The same benchmark measured the whole logged-in page of 20 at half
# the CPU of reading it from the database as before; tests/perf/test_logged_in_reads.py
# counts the statements. A miss loads the shared entry with the caller's statement, which
# carries liked_by_me: a logged-in read is one statement, warm or cold.

_VIEWER_POSTS = "posts"  # the name of a post entry's fragments (fastpost.fragments.derived)


@cache
def _viewer_flags_statement(dialect: str) -> Select[Any]:
    liked = exists().where(
        likes.c.user_id == bindparam("viewer_id", type_=BigInteger),
        likes.c.post_id == posts.c.id,
    )
    # Visibility as a column, not a condition: in WHERE, SQLite's planner chose to read the
    # published posts by index (a MULTI-INDEX OR) over probing the primary key per id.
    return select(
        posts.c.id,
        posts.c.likes_count,
        liked.label("liked_by_me"),
        visible_posts(with_viewer=True).label("visible"),
    ).where(one_of(posts.c.id, "ids", dialect=dialect, item_type=BigInteger()))


def _post_end(likes_count: int, liked: Any) -> bytes:
    return b',"likes_count":%d,"liked_by_me":%s}' % (likes_count, b"true" if liked else b"false")


def _ends_of(rows: Sequence[Row]) -> dict[int, bytes]:
    return {row["id"]: _post_end(row["likes_count"], row["liked_by_me"]) for row in rows}


async def _viewer_ends(db: Database, viewer_id: int, post_ids: list[int]) -> dict[int, bytes]:
    """Each post's end as the viewer sees it; a post gone or hidden since has none."""
    if not post_ids:
        return {}
    rows = await db.fetch_all(
        _viewer_flags_statement(db.dialect), {"ids": post_ids, "viewer_id": viewer_id}
    )
    return _ends_of([row for row in rows if row["visible"]])


_PER_VIEWER = ("likes_count", "liked_by_me")


def _split_post(body: bytes) -> fragments.Fragments[int]:
    item = orjson.loads(body)
    start = fragments.item_start(item, drop=_PER_VIEWER)
    return fragments.Fragments(b"", ((item["id"], start),), b"")


def _split_post_page(body: bytes) -> fragments.Fragments[int]:
    page = orjson.loads(body)
    items = tuple(
        (item["id"], fragments.item_start(item, drop=_PER_VIEWER)) for item in page["items"]
    )
    tail = b'],"next_cursor":' + orjson.dumps(page["next_cursor"]) + b"}"
    return fragments.Fragments(b'{"items":[', items, tail)


class _OwnDraft(NotFound):
    """A post only its author may see: not for the shared cache (as absent to every other
    caller waiting on the same load)."""


async def post_for_viewer(*, db: Database, cache: Cache, viewer_id: int, post_id: int) -> bytes:
    """One post as the viewer sees it: the shared entry, with their flags."""
    loaded: list[Row] = []

    async def load() -> Entry:
        row = await db.fetch_one(
            _detail_statement(True), {"post_id": post_id, "viewer_id": viewer_id}
        )
        loaded.append(row or {})
        if row is None:
            raise NotFound("Post not found", code="post_not_found")
        if row["status"] != PostStatus.published.value:
            raise _OwnDraft("Post not found", code="post_not_found")
        return _post_entry(row)

    try:
        entry = await cache.get_or_load(post_key(post_id), load, ttl=POST_TTL)
    except NotFound:
        if not loaded:
            # Another request's load (anonymous, so published posts only) found nothing:
            # the post may still be this caller's draft.
            return dump_json(await get_post(db=db, viewer_id=viewer_id, post_id=post_id))
        if not loaded[0]:
            raise
        return dump_json(post_dict(loaded[0], viewer_id))
    shared = fragments.derived(entry, _VIEWER_POSTS, _split_post)
    ends = _ends_of(loaded) if loaded else await _viewer_ends(db, viewer_id, [post_id])
    if post_id not in ends:
        raise NotFound("Post not found", code="post_not_found")
    return shared.complete(ends)


async def first_page_for_viewer(
    *,
    db: Database,
    cache: Cache,
    viewer_id: int,
    limit: int,
    author_id: int | None = None,
    tag: str | None = None,
) -> bytes:
    """The first page of cached_first_page as the viewer sees it: the shared entry, with
    their flags."""
    page = Page(limit, None, 0)
    loaded: list[Row] = []

    async def load() -> Entry:
        stmt = _list_statement(True, author_id is not None, tag is not None, page.shape)
        params = {
            **page.params,
            "viewer_id": viewer_id,
            "author_id": author_id,
            "tag": tag,
            "status": PostStatus.published.value,
        }
        rows = await db.fetch_all(stmt, params)
        loaded.extend(rows)
        shared = post_page(rows, page, None)
        return Entry.of(dump_json(shared), tags=_authors_of(shared["items"]))

    key, name = _first_page_key(limit, author_id, tag)
    entry = await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[name])
    shared = fragments.derived(entry, _VIEWER_POSTS, _split_post_page)
    if loaded:
        ends = _ends_of(loaded)
    else:
        ends = await _viewer_ends(db, viewer_id, shared.keys)
    return shared.complete(ends)


def stale_after_post_write(
    *, post_id: int | None, author_id: int, tags_in_use: bool
) -> tuple[list[str], list[str]]:
    """The keys and tags a write to a post makes stale: the post itself, the lists it may be
    on, its author's overview, and (tags_in_use) the list of tags, whose membership and
    order follow how many published posts carry each tag. Dropped after the commit."""
    keys = [] if post_id is None else [post_key(post_id)]
    tags = ["posts:first", "posts:popular", f"author:{author_id}:posts", f"overview:{author_id}"]
    if tags_in_use:
        tags.append(post_tags.TAGS_CACHE_TAG)
    if post_id is not None:
        tags.append(post_tag(post_id))
    return keys, tags


async def create_post(
    *,
    db: Database,
    cache: Cache,
    author_id: int,
    title: str,
    content: str,
    status: PostStatus,
    description: str = "",
    tags: Sequence[str] = (),
) -> tuple[PostDict, str | None]:
    """Create a post by the caller, with its tags; return it as the API shows it, and its
    author's bio (for APIs that show it)."""
    # Everything but the statements happens outside the transaction (see fastpost.writes).
    now = utcnow()
    names = post_tags.normalise_tags(tags)
    values = post_writes.new_post_values(
        author_id=author_id,
        title=title,
        slug=make_slug(title),
        description=description,
        content=content,
        status=status.value,
        now=now,
    )
    try:
        post_id, (username, image, bio) = await db.write(
            post_writes.create_post(db.dialect, values, names),
            # PostgreSQL: the post is one statement (tags first, on their own: see there).
            atomic=False,
        )
    except IntegrityError:
        # The token outlived its account: the author row is gone.
        raise Unauthorized("Account no longer exists", code="account_gone") from None
    keys, stale_tags = stale_after_post_write(
        post_id=None, author_id=author_id, tags_in_use=bool(names)
    )
    await cache.invalidate(keys=keys, tags=stale_tags)
    post = {
        "id": post_id,
        "slug": values["slug"],
        "title": title,
        "description": description,
        "content": content,
        "status": status.value,
        "likes_count": 0,
        "tags": names,
        "created_at": now,
        "updated_at": now,
        "author": {"id": author_id, "username": username, "image": image},
        "liked_by_me": False,
    }
    return post, bio


def _author_check(*, user_id: int, post_id: int) -> WriteProgram[tuple[int, datetime, int]]:
    """Lock the post, check that the user wrote it; return its author_id, updated_at and
    likes_count."""
    rows = yield Step(post_writes.POST_FOR_WRITE, {"post_id": post_id})
    if not rows or (rows[0][1] != PostStatus.published and rows[0][0] != user_id):
        raise NotFound("Post not found", code="post_not_found")
    author_id, _, updated_at, likes_count = rows[0]
    if author_id != user_id:
        raise Forbidden("Only the author may change or delete this post", code="not_author")
    if isinstance(updated_at, str):  # SQLite's rows, straight from sqlite3
        updated_at = datetime.fromisoformat(updated_at)
    return int(author_id), updated_at, int(likes_count)


def update_steps(
    dialect: str,
    *,
    user_id: int,
    post_id: int,
    changes: dict[str, Any],
    tags: Sequence[str] | None,
    if_match: str | None,
) -> WriteProgram[int]:
    """Apply the author's changes (a write program: see fastpost.writes); return the post's
    author."""
    author_id, updated_at, likes_count = yield from _author_check(user_id=user_id, post_id=post_id)
    # Checked under the row lock, so no write can slip in between.
    if if_match is not None and not etag_matches(
        if_match, post_etag(post_id, updated_at, likes_count), weak=False
    ):
        raise PreconditionFailed(
            "The post changed since you read it: fetch it again and reapply your change"
        )
    columns = tuple(sorted(changes))
    params = {f"new_{name}": getattr(changes[name], "value", changes[name]) for name in columns}
    # Bumped for a change of tags alone too: updated_at is the post's version, in its ETag.
    # Read under the lock, as the ORM's flush did: versions follow the order of the writes.
    params.update(post_id=post_id, now=utcnow())
    yield Step(post_writes.update_post_statement(columns), params)
    if tags is not None:
        yield from post_writes.set_tags(dialect, post_id, post_tags.normalise_tags(tags))
    return int(author_id)


def _written_post(dialect: str, row: Any) -> dict[str, Any]:
    """A row read back by a write program as the read path gives it."""
    post = dict(row)
    if dialect != "postgresql":  # sqlite3 hands timestamps back as stored, as text
        for name in ("created_at", "updated_at"):
            post[name] = datetime.fromisoformat(post[name])
    return post


def _update_and_read_back(
    dialect: str, *, user_id: int, post_id: int, **change: Any
) -> WriteProgram[tuple[int, dict[str, Any]]]:
    author_id = yield from update_steps(dialect, user_id=user_id, post_id=post_id, **change)
    # In the same transaction, on the primary: the caller sees what it just wrote.
    (row,) = yield Step(_detail_statement(True), {"post_id": post_id, "viewer_id": user_id})
    return author_id, _written_post(dialect, row)


async def update_post(
    *,
    db: Database,
    cache: Cache,
    user_id: int,
    post_id: int,
    changes: dict[str, Any],
    tags: Sequence[str] | None = None,
    if_match: str | None = None,
) -> PostDict:
    """Apply the author's changes to a post and, unless `tags` is None, make it carry
    exactly those tags; with `if_match`, only if nobody changed it since the client read it
    (412 otherwise: no lost update)."""
    author_id, row = await db.write(
        _update_and_read_back(
            db.dialect,
            user_id=user_id,
            post_id=post_id,
            changes=changes,
            tags=tags,
            if_match=if_match,
        )
    )
    await invalidate_update(cache, post_id=post_id, author_id=author_id, changes=changes, tags=tags)
    return post_dict(row, user_id)


async def invalidate_update(
    cache: Cache,
    *,
    post_id: int,
    author_id: int,
    changes: dict[str, Any],
    tags: Sequence[str] | None,
) -> None:
    """Drop what an update made stale; call it after the commit."""
    # A change of tags or of status changes how many published posts carry each tag.
    keys, stale = stale_after_post_write(
        post_id=post_id, author_id=author_id, tags_in_use=tags is not None or "status" in changes
    )
    await cache.invalidate(keys=keys, tags=stale)


_DELETE_POST = posts.delete().where(posts.c.id == bindparam("post_id", type_=BigInteger))


def delete_steps(*, user_id: int, post_id: int) -> WriteProgram[int]:
    """Delete the author's post (a write program); return its author."""
    author_id, _, _ = yield from _author_check(user_id=user_id, post_id=post_id)
    # Its likes, tags and comments go with it: ON DELETE CASCADE.
    yield Step(_DELETE_POST, {"post_id": post_id})
    return author_id


async def delete_post(*, db: Database, cache: Cache, user_id: int, post_id: int) -> None:
    """Delete the author's post, with its likes, tags and comments."""
    author_id = await db.write(delete_steps(user_id=user_id, post_id=post_id))
    await invalidate_delete(cache, post_id=post_id, author_id=author_id)


async def invalidate_delete(cache: Cache, *, post_id: int, author_id: int) -> None:
    """Drop what showed a deleted post; call it after the commit."""
    keys, tags = stale_after_post_write(post_id=post_id, author_id=author_id, tags_in_use=True)
    await cache.invalidate(keys=keys, tags=tags)


_LIKEABLE = select(
    select(posts.c.author_id)
    .where(posts.c.id == bindparam("post_id", type_=BigInteger), visible_posts(with_viewer=True))
    .scalar_subquery()
    .label("author_id"),
    select(users.c.id)
    .where(users.c.id == bindparam("viewer_id", type_=BigInteger))
    .exists()
    .label("account"),
)


async def visible_post_author(*, session: AsyncSession, post_id: int, user_id: int) -> int:
    """Return the post's author, checking in one round trip that the user may see the post
    and that the user still exists (a token can outlive its account, and a like or comment
    would then fail on the foreign key and be reported as a missing post)."""
    result = await session.execute(_LIKEABLE, {"post_id": post_id, "viewer_id": user_id})
    row = result.one()
    if not row.account:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if row.author_id is None:
        raise NotFound("Post not found", code="post_not_found")
    author_id: int = row.author_id
    return author_id


@cache
def _add_like(dialect: str) -> Any:
    return (
        insert_or_ignore(dialect, likes)
        .values(
            user_id=bindparam("viewer_id", type_=BigInteger),
            post_id=bindparam("post_id", type_=BigInteger),
            created_at=bindparam("now", type_=likes.c.created_at.type),
        )
        .returning(likes.c.post_id)
    )


_REMOVE_LIKE = (
    likes.delete()
    .where(
        likes.c.user_id == bindparam("viewer_id", type_=BigInteger),
        likes.c.post_id == bindparam("post_id", type_=BigInteger),
    )
    .returning(likes.c.post_id)
)
# `likes_count = likes_count + 1` is evaluated by the database under the row lock, so
# concurrent likes never overwrite each other's increments (no read-modify-write here).
# updated_at moves with it: both are in the post's ETag.
_COUNT_CHANGE = (
    posts.update()
    .where(posts.c.id == bindparam("post_id", type_=BigInteger))
    .values(
        likes_count=posts.c.likes_count + bindparam("delta", type_=Integer),
        updated_at=bindparam("now", type_=posts.c.updated_at.type),
    )
    .returning(posts.c.likes_count)
)
_COUNT = select(posts.c.likes_count).where(posts.c.id == bindparam("post_id", type_=BigInteger))


def set_like(
    dialect: str, *, user_id: int, post_id: int, liked: bool
) -> WriteProgram[tuple[int, int, bool]]:
    """Add (liked) or remove the user's like (a write program: see fastpost.writes); return
    the post's author, its likes_count and whether anything changed."""
    # The clock is read in the transaction, as the ORM's column defaults were.
    params = {"post_id": post_id, "viewer_id": user_id, "now": utcnow()}
    (row,) = yield Step(_LIKEABLE, params)
    # A token can outlive its account: the insert would then fail on the foreign key and be
    # reported as a missing post.
    if not row[1]:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if row[0] is None:
        raise NotFound("Post not found", code="post_not_found")
    changed = yield Step(_add_like(dialect) if liked else _REMOVE_LIKE, params)
    if changed:
        counts = yield Step(_COUNT_CHANGE, {**params, "delta": 1 if liked else -1})
    else:
        counts = yield Step(_COUNT, params)
    if not counts:
        raise NotFound("Post not found", code="post_not_found")
    return row[0], int(counts[0][0]), bool(changed)


async def _like(
    *, db: Database, cache: Cache, user_id: int, post_id: int, liked: bool
) -> dict[str, Any]:
    try:
        author_id, count, changed = await db.write(
            set_like(db.dialect, user_id=user_id, post_id=post_id, liked=liked)
        )
    except IntegrityError:
        # The post or the account was deleted since the check.
        raise NotFound("Post not found", code="post_not_found") from None
    if changed:
        await invalidate_like(cache, post_id=post_id, author_id=author_id)
    return {"post_id": post_id, "liked": liked, "likes_count": count}


async def invalidate_like(cache: Cache, *, post_id: int, author_id: int) -> None:
    """Drop what showed a post's likes_count; call it after the like's commit."""
    keys, tags = stale_after_post_write(post_id=post_id, author_id=author_id, tags_in_use=False)
    await cache.invalidate(keys=keys, tags=tags)


async def like_post(*, db: Database, cache: Cache, user_id: int, post_id: int) -> dict[str, Any]:
    """Like a post; liking it again changes nothing."""
    return await _like(db=db, cache=cache, user_id=user_id, post_id=post_id, liked=True)


async def unlike_post(*, db: Database, cache: Cache, user_id: int, post_id: int) -> dict[str, Any]:
    """Take a like back; taking back a like that is not there changes nothing."""
    return await _like(db=db, cache=cache, user_id=user_id, post_id=post_id, liked=False)
