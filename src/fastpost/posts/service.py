"""What the posts domain does: list, read, search, write, tag and like posts.

Reads are one statement per request: the page, each post's author, its tags and, for a
logged-in caller, whether they liked it come back in one round trip whatever the page size
(no N+1). The statements are the post read model's (fastpost.posts.queries), which the
feed, comments and RealWorld read through as well. Writes are write programs (see
fastpost.writes) that return what an API needs to answer without reading the post again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
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
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.exc import IntegrityError

from fastpost import cache_keys, fragments
from fastpost.cache import Cache, Entry
from fastpost.db import Database, Row
from fastpost.errors import Forbidden, NotFound, PreconditionFailed, Unauthorized
from fastpost.http_caching import etag_matches, http_date
from fastpost.pagination import Cursor, Page, cut_page
from fastpost.posts import queries
from fastpost.posts import tags as post_tags
from fastpost.posts import writes as post_writes
from fastpost.posts.models import PostStatus
from fastpost.posts.queries import PostRead, PostRef
from fastpost.posts.slugs import make_slug
from fastpost.responses import dump_json
from fastpost.timeutil import as_utc, unix_micros, utcnow
from fastpost.writes import Step, WriteProgram, insert_or_ignore

posts = queries.posts
likes = queries.likes
users = queries.users
# SQLite's full-text index (made by the migration, not mapped).
posts_fts = table("posts_fts", column("rowid"), column("rank"))

PostDict = dict[str, Any]

# What the native API reads: every column, and liked_by_me for a logged-in caller.
_ANONYMOUS = PostRead()
_VIEWER = PostRead(viewer=True)


def post_read(with_viewer: bool) -> PostRead:
    """What the native API reads of a post, with liked_by_me for a logged-in caller."""
    return _VIEWER if with_viewer else _ANONYMOUS


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
def list_statement(
    with_viewer: bool, by_author: bool, by_tag: bool, shape: tuple[bool, bool]
) -> Select[Any]:
    """The native list's statement: a keyset page of posts, by author, tag, both or neither."""
    author: queries.AuthorFilter = "id" if by_author else None
    return queries.list_statement(post_read(with_viewer), tag=by_tag, author=author, shape=shape)


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
    stmt = list_statement(viewer_id is not None, author_id is not None, tag is not None, page.shape)
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
    return queries.post_statement(post_read(with_viewer), "id")


async def get_post(*, db: Database, viewer_id: int | None, post_id: int) -> PostDict:
    """Return one post; another author's draft is as absent as a missing post."""
    stmt = _detail_statement(viewer_id is not None)
    row = await db.fetch_one(stmt, {"post_id": post_id, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("Post not found", code="post_not_found")
    return post_dict(row, viewer_id)


@cache
def popular_statement(with_viewer: bool) -> Select[Any]:
    """The most liked published posts, up to :limit."""
    return queries.popular_statement(post_read(with_viewer))


async def list_popular_posts(*, db: Database, viewer_id: int | None, limit: int) -> list[PostDict]:
    """Return the most liked published posts."""
    stmt = popular_statement(viewer_id is not None)
    rows = await db.fetch_all(stmt, {"limit": limit, "viewer_id": viewer_id})
    return [post_dict(r, viewer_id) for r in rows]


def _fts5_query(q: str) -> str:
    # Each word becomes a quoted FTS5 string, so user input is matched as words (all of
    # them) and never parsed as FTS5 syntax (NEAR, column filters, unbalanced quotes).
    return " ".join('"' + word.replace('"', '""') + '"' for word in q.split())


@cache
def _search_statement(dialect: str, with_viewer: bool) -> Select[Any]:
    stmt = queries.select_posts(post_read(with_viewer)).where(posts.c.status == queries.PUBLISHED)
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


async def visible_post_id(*, db: Database, viewer_id: int | None, post: PostRef) -> int:
    """Return the post's id if it exists and the viewer may see it (404 otherwise)."""
    stmt = queries.visible_id_statement(post.key, viewer_id is not None)
    row = await db.fetch_one(stmt, {**post.params, "viewer_id": viewer_id})
    if row is None:
        raise NotFound("Post not found", code="post_not_found")
    post_id: int = row["id"]
    return post_id


async def ensure_post_visible(*, db: Database, viewer_id: int | None, post_id: int) -> None:
    """Raise 404 unless the post exists and the viewer may see it."""
    await visible_post_id(db=db, viewer_id=viewer_id, post=PostRef.by_id(post_id))


# Cached representations, as anonymous callers see them. Logged-in callers are served the
# same entries of a post and of first pages, with their own liked_by_me and a fresh
# likes_count spliced in (see "For a logged-in caller" below). Tags name what an entry
# shows, so that a write drops every entry it makes stale: see stale_after_post_write and
# users.service.
POST_TTL = 300.0  # Redis lifetime; invalidation normally ends an entry long before
LIST_TTL = 30.0


def post_etag(post_id: int, updated_at: datetime, likes_count: int) -> str:
    """A version, not a hash: every worker computes it from the row alone, and a PATCH can
    check If-Match against the locked row without rendering anything."""
    return f'"p{post_id}-{unix_micros(updated_at)}-{likes_count}"'


def _post_entry(row: Row) -> Entry:
    return Entry.of(
        dump_json(post_dict(row, None)),
        etag=post_etag(row["id"], row["updated_at"], row["likes_count"]),
        last_modified=http_date(as_utc(row["updated_at"])),
        tags=[cache_keys.user_tag(row["author_id"])],
    )


def authors_of(items: list[PostDict]) -> list[str]:
    """The cache tags of the authors of `items`: a change to one drops the entry."""
    return sorted({cache_keys.user_tag(item["author"]["id"]) for item in items})


async def cached_post(*, db: Database, cache: Cache, post_id: int) -> Entry:
    """A published post as an anonymous caller sees it."""

    async def load() -> Entry:
        row = await db.fetch_one(_detail_statement(False), {"post_id": post_id})
        if row is None:
            raise NotFound("Post not found", code="post_not_found")
        return _post_entry(row)

    return await cache.get_or_load(cache_keys.post(post_id), load, ttl=POST_TTL)


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
        return Entry.of(dump_json(page), tags=authors_of(page["items"]))

    key, name = first_page_key(limit, author_id, tag)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[name])


def first_page_key(limit: int, author_id: int | None, tag: str | None) -> tuple[str, str]:
    """The cache key of a first page, and the tag its writes drop."""
    return cache_keys.first_page(limit, author_id, tag), cache_keys.first_page_tag(author_id)


async def cached_popular(*, db: Database, cache: Cache, limit: int) -> Entry:
    """The most liked published posts."""

    async def load() -> Entry:
        items = await list_popular_posts(db=db, viewer_id=None, limit=limit)
        return Entry.of(dump_json(items), tags=authors_of(items))

    key = cache_keys.popular(limit)
    return await cache.get_or_load(key, load, ttl=LIST_TTL, tags=[cache_keys.POPULAR])


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


def _post_end(likes_count: int, liked: Any) -> bytes:
    return b',"likes_count":%d,"liked_by_me":%s}' % (likes_count, b"true" if liked else b"false")


def _ends_of(rows: Sequence[Row]) -> dict[int, bytes]:
    return {row["id"]: _post_end(row["likes_count"], row["liked_by_me"]) for row in rows}


async def _viewer_ends(db: Database, viewer_id: int, post_ids: list[int]) -> dict[int, bytes]:
    """Each post's end as the viewer sees it; a post gone or hidden since has none."""
    if not post_ids:
        return {}
    stmt = queries.viewer_flags_statement(db.dialect, "id", with_following=False)
    rows = await db.fetch_all(stmt, {"post_ids": post_ids, "viewer_id": viewer_id})
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
        entry = await cache.get_or_load(cache_keys.post(post_id), load, ttl=POST_TTL)
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

    async def read() -> tuple[Sequence[Row], list[str]]:
        stmt = list_statement(True, author_id is not None, tag is not None, page.shape)
        params = {
            **page.params,
            "viewer_id": viewer_id,
            "author_id": author_id,
            "tag": tag,
            "status": PostStatus.published.value,
        }
        return await db.fetch_all(stmt, params), []

    key, name = first_page_key(limit, author_id, tag)
    return await page_for_viewer(
        db=db, cache=cache, viewer_id=viewer_id, page=page, key=key, tags=[name], read=read
    )


async def page_for_viewer(
    *,
    db: Database,
    cache: Cache,
    viewer_id: int,
    page: Page,
    key: str,
    tags: Sequence[str],
    read: Callable[[], Awaitable[tuple[Sequence[Row], Sequence[str]]]],
) -> bytes:
    """A page of posts as the viewer sees it: its shared part from the cache under `key`,
    with their flags. On a miss, `read` gives the page's rows read with the viewer's flags
    (so a cold read needs no second statement) and the tags it found beyond the authors
    shown; `tags` are those known before reading."""
    loaded: list[Row] = []

    async def load() -> Entry:
        rows, found = await read()
        loaded.extend(rows)
        shared = post_page(rows, page, None)
        return Entry.of(dump_json(shared), tags=sorted({*authors_of(shared["items"]), *found}))

    entry = await cache.get_or_load(key, load, ttl=LIST_TTL, tags=tags)
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
    keys = [] if post_id is None else [cache_keys.post(post_id)]
    tags = [
        cache_keys.FIRST_PAGES,
        cache_keys.POPULAR,
        cache_keys.author_posts_tag(author_id),
        cache_keys.overview_tag(author_id),
    ]
    if tags_in_use:
        tags.append(cache_keys.TAGS_IN_USE)
    if post_id is not None:
        tags.append(cache_keys.post_tag(post_id))
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
    values, names = new_post(
        author_id=author_id,
        title=title,
        slug=make_slug(title),
        content=content,
        status=status,
        description=description,
        tags=tags,
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
    await invalidate_create(cache, author_id=author_id, tags_in_use=bool(names))
    return created_post(values, post_id=post_id, tags=names, username=username, image=image), bio


def new_post(
    *,
    author_id: int,
    title: str,
    slug: str,
    content: str,
    status: PostStatus,
    description: str,
    tags: Sequence[str],
) -> tuple[dict[str, Any], list[str]]:
    """Return a new post's row values (post_writes.new_post_values, stamped now) and its
    tags, normalised."""
    values = post_writes.new_post_values(
        author_id=author_id,
        title=title,
        slug=slug,
        description=description,
        content=content,
        status=status.value,
        now=utcnow(),
    )
    return values, post_tags.normalise_tags(tags)


async def invalidate_create(cache: Cache, *, author_id: int, tags_in_use: bool) -> None:
    """Drop what a new post made stale; call it after the commit."""
    keys, tags = stale_after_post_write(post_id=None, author_id=author_id, tags_in_use=tags_in_use)
    await cache.invalidate(keys=keys, tags=tags)


def created_post(
    values: dict[str, Any], *, post_id: int, tags: list[str], username: str, image: str | None
) -> PostDict:
    """A post just created from `values` (new_post's), as the API shows it: nothing to
    read back."""
    return {
        "id": post_id,
        "slug": values["slug"],
        "title": values["title"],
        "description": values["description"],
        "content": values["content"],
        "status": values["status"],
        "likes_count": 0,
        "tags": tags,
        "created_at": values["created_at"],
        "updated_at": values["updated_at"],
        "author": {"id": values["author_id"], "username": username, "image": image},
        "liked_by_me": False,
    }


def own_post(*, user_id: int, post: PostRef) -> WriteProgram[tuple[int, datetime, int]]:
    """Lock the post, check that the user wrote it; return its id, updated_at and
    likes_count."""
    rows = yield Step(queries.post_for_write(post.key), post.params)
    if not rows or (rows[0]["status"] != PostStatus.published and rows[0]["author_id"] != user_id):
        raise NotFound("Post not found", code="post_not_found")
    post_id, author_id, _, updated_at, likes_count = rows[0]
    if author_id != user_id:
        raise Forbidden("Only the author may change or delete this post", code="not_author")
    if isinstance(updated_at, str):  # SQLite's rows, straight from sqlite3
        updated_at = datetime.fromisoformat(updated_at)
    return int(post_id), updated_at, int(likes_count)


def update_steps(
    dialect: str,
    *,
    user_id: int,
    post: PostRef,
    changes: dict[str, Any],
    tags: Sequence[str] | None,
    if_match: str | None,
) -> WriteProgram[int]:
    """Apply the author's changes (a write program: see fastpost.writes); return the post's
    id. The post is looked up (and locked) once, by id or slug."""
    post_id, updated_at, likes_count = yield from own_post(user_id=user_id, post=post)
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
    return post_id


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
    post = PostRef.by_id(post_id)
    yield from update_steps(dialect, user_id=user_id, post=post, **change)
    # In the same transaction, on the primary: the caller sees what it just wrote.
    (row,) = yield Step(_detail_statement(True), {"post_id": post_id, "viewer_id": user_id})
    # The author is the caller: update_steps checked it.
    return user_id, _written_post(dialect, row)


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


def delete_steps(*, user_id: int, post: PostRef) -> WriteProgram[int]:
    """Delete the author's post (a write program), looked up by id or slug; return its id
    (its author is the user: checked)."""
    post_id, _, _ = yield from own_post(user_id=user_id, post=post)
    # Its likes, tags and comments go with it: ON DELETE CASCADE.
    yield Step(_DELETE_POST, {"post_id": post_id})
    return post_id


async def delete_post(*, db: Database, cache: Cache, user_id: int, post: PostRef) -> None:
    """Delete the author's post (by id or slug), with its likes, tags and comments."""
    post_id = await db.write(delete_steps(user_id=user_id, post=post))
    await invalidate_delete(cache, post_id=post_id, author_id=user_id)


async def invalidate_delete(cache: Cache, *, post_id: int, author_id: int) -> None:
    """Drop what showed a deleted post; call it after the commit."""
    keys, tags = stale_after_post_write(post_id=post_id, author_id=author_id, tags_in_use=True)
    await cache.invalidate(keys=keys, tags=tags)


@cache
def add_like(dialect: str) -> Any:
    """Insert a like of :post_id by :viewer_id unless there is one; returns its post_id if new."""
    return (
        insert_or_ignore(dialect, likes)
        .values(
            user_id=bindparam("viewer_id", type_=BigInteger),
            post_id=bindparam("post_id", type_=BigInteger),
            created_at=bindparam("now", type_=likes.c.created_at.type),
        )
        .returning(likes.c.post_id)
    )


REMOVE_LIKE = (
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
COUNT_CHANGE = (
    posts.update()
    .where(posts.c.id == bindparam("post_id", type_=BigInteger))
    .values(
        likes_count=posts.c.likes_count + bindparam("delta", type_=Integer),
        updated_at=bindparam("now", type_=posts.c.updated_at.type),
    )
    .returning(posts.c.likes_count)
)
COUNT = select(posts.c.likes_count).where(posts.c.id == bindparam("post_id", type_=BigInteger))


def set_like(
    dialect: str, *, user_id: int, post: PostRef, liked: bool
) -> WriteProgram[tuple[int, int, int, bool]]:
    """Add (liked) or remove the user's like of a post by id or slug (a write program: see
    fastpost.writes); return the post's id, its author, its likes_count and whether
    anything changed."""
    # The clock is read in the transaction, as the ORM's column defaults were.
    params: dict[str, Any] = {**post.params, "viewer_id": user_id, "now": utcnow()}
    (row,) = yield Step(queries.post_for_viewer_write(post.key), params)
    # A token can outlive its account: the insert would then fail on the foreign key and be
    # reported as a missing post.
    if not row["account"]:
        raise Unauthorized("Account no longer exists", code="account_gone")
    if row["author_id"] is None:
        raise NotFound("Post not found", code="post_not_found")
    post_id = int(row["post_id"])
    params["post_id"] = post_id
    changed = yield Step(add_like(dialect) if liked else REMOVE_LIKE, params)
    if changed:
        counts = yield Step(COUNT_CHANGE, {**params, "delta": 1 if liked else -1})
    else:
        counts = yield Step(COUNT, params)
    if not counts:
        raise NotFound("Post not found", code="post_not_found")
    return post_id, int(row["author_id"]), int(counts[0][0]), bool(changed)


async def _like(
    *, db: Database, cache: Cache, user_id: int, post_id: int, liked: bool
) -> dict[str, Any]:
    try:
        _, author_id, count, changed = await db.write(
            set_like(db.dialect, user_id=user_id, post=PostRef.by_id(post_id), liked=liked)
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
