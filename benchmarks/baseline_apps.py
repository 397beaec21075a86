"""The baselines fastpost's read path is measured against, as uvicorn factories.

- `constant_app` (re-exported from fastpost.bench.baseline, where `fastpost bench` finds it):
  bare Starlette answering `/posts/` and `/posts/{id}` with fixed bytes (the exact bodies
  fastpost returned, fetched once by the benchmark): the ceiling of the server and
  framework, with no database and no serialisation.
- `asyncpg_app`: Starlette + an asyncpg pool, no SQLAlchemy and no FastAPI, running by hand
  the statements fastpost runs and serialising the same JSON shape with orjson:
  what the read path could cost if every layer between HTTP and the driver were free.

Configured by environment variables, because uvicorn builds the app in its own process:
    BENCH_LIST_BODY, BENCH_DETAIL_BODY   files holding the constant bodies
    BENCH_PG_DSN                          asyncpg DSN (postgresql://user@host:port/db)
    BENCH_PG_POOL_MIN, BENCH_PG_POOL_MAX  pool bounds; the benchmark passes 1 and fastpost's
                                          read pool_size (fastpost's read pool is the same)

    uvicorn benchmarks.baseline_apps:asyncpg_app --factory --loop uvloop --http httptools
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastpost.bench.baseline import constant_app

__all__ = ["asyncpg_app", "constant_app"]

JSON = "application/json"

# fastpost's posts.service.select_posts for an anonymous caller, with the page applied by
# pagination.keyset_page (LIMIT page size + 1: the extra row tells whether more follow).
LIST_SQL = """
SELECT posts.id, posts.slug, posts.title, posts.description, posts.content, posts.status,
       posts.likes_count,
       posts.created_at, posts.updated_at, posts.author_id,
       users.username AS author_username, users.image AS author_image,
       (SELECT array_agg(tags.name) FROM post_tags JOIN tags ON tags.id = post_tags.tag_id
        WHERE post_tags.post_id = posts.id) AS tag_names
FROM posts JOIN users ON users.id = posts.author_id
WHERE posts.status = $1
ORDER BY posts.created_at DESC, posts.id DESC
LIMIT $2
"""

# posts.service.get_post for an anonymous caller: published posts only.
DETAIL_SQL = """
SELECT posts.id, posts.slug, posts.title, posts.description, posts.content, posts.status,
       posts.likes_count,
       posts.created_at, posts.updated_at, posts.author_id,
       users.username AS author_username, users.image AS author_image,
       (SELECT array_agg(tags.name) FROM post_tags JOIN tags ON tags.id = post_tags.tag_id
        WHERE post_tags.post_id = posts.id) AS tag_names
FROM posts JOIN users ON users.id = posts.author_id
WHERE posts.id = $1 AND posts.status = $2
"""

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _cursor(created_at: datetime, post_id: int) -> str:
    # fastpost.pagination.Cursor.encode, so that the bodies match byte for byte.
    micros = (created_at - _EPOCH) // _MICROSECOND
    return base64.urlsafe_b64encode(f"{micros}:{post_id}".encode()).rstrip(b"=").decode()


def _post(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "content": row["content"],
        "status": row["status"],
        "likes_count": row["likes_count"],
        # Sorted by code point, as fastpost does (a collation would order mixed case otherwise).
        "tags": sorted(name for name in row["tag_names"] or () if name is not None),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "author": {
            "id": row["author_id"],
            "username": row["author_username"],
            "image": row["author_image"],
        },
        "liked_by_me": None,
    }


def _json(content: Any, status_code: int = 200) -> Response:
    # orjson, as the hand-written reference of benchmarks/baseline_realworld.py, and as
    # fastpost's read routes: the baseline gets every trick fastpost uses.
    return Response(
        orjson.dumps(content, option=orjson.OPT_UTC_Z), status_code=status_code, media_type=JSON
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release (fastpost's read pool skips it too: see fastpost.db)."""


def _not_found() -> Response:
    return _json({"detail": "Post not found", "code": "post_not_found"}, 404)


def pool_lifespan(
    default_min: int = 10,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """A lifespan opening `app.state.pool` on BENCH_PG_DSN, sized by BENCH_PG_POOL_MIN and
    BENCH_PG_POOL_MAX, with no reset query on release."""
    dsn = os.environ["BENCH_PG_DSN"]
    pool_min = int(os.environ.get("BENCH_PG_POOL_MIN", str(default_min)))
    pool_max = int(os.environ.get("BENCH_PG_POOL_MAX", "15"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn, min_size=pool_min, max_size=pool_max, reset=_keep_session
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    return lifespan


def asyncpg_app() -> Starlette:
    """Serve `GET /posts/?limit=N` and `GET /posts/{id}` from PostgreSQL through asyncpg."""
    lifespan = pool_lifespan()

    async def list_posts(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return _json({"detail": "Invalid limit", "code": "validation_error"}, 422)
        rows = await request.app.state.pool.fetch(LIST_SQL, "published", limit + 1)
        cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            cursor = _cursor(rows[-1]["created_at"], rows[-1]["id"])
        return _json({"items": [_post(row) for row in rows], "next_cursor": cursor})

    async def read_post(request: Request) -> Response:
        post_id = request.path_params["post_id"]
        if not 1 <= post_id < 2**53:
            return _not_found()
        row = await request.app.state.pool.fetchrow(DETAIL_SQL, post_id, "published")
        if row is None:
            return _not_found()
        return _json(_post(row))

    return Starlette(
        routes=[
            Route("/posts/", list_posts),
            Route("/posts/{post_id:int}", read_post),
        ],
        lifespan=lifespan,
    )
