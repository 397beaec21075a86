"""The hand-written reference for `GET /api/articles?limit=N`: Starlette + asyncpg + orjson,
the page as ONE SQL statement (author joined, tags aggregated, total read from the same
counter row fastpost reads), answering the same JSON bytes as fastpost.

This is the hand-written limit of the RealWorld list (the page as one statement on the
leanest stack), with one choice: the total is the counter row of migration 0002, not
`count(*)` over the filtered set, because a count over a million rows on every request
would make the baseline, not fastpost, the slow one.

    BENCH_PG_DSN=postgresql://postgres@127.0.0.1:5432/fastpost_bench_rw \\
      .venv/bin/uvicorn benchmarks.baseline_realworld:realworld_app --factory
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.baseline_apps import pool_lifespan

JSON = "application/json"
MAX_LIMIT = 100

ARTICLES_SQL = """
SELECT p.slug, p.title, p.description, p.created_at, p.updated_at, p.likes_count,
       u.username, u.bio, u.image,
       ARRAY(SELECT t.name FROM post_tags AS pt JOIN tags AS t ON t.id = pt.tag_id
             WHERE pt.post_id = p.id ORDER BY t.name) AS tags,
       (SELECT n FROM post_counts WHERE kind = 'a' AND ref_id = 0) AS total
FROM posts AS p JOIN users AS u ON u.id = p.author_id
WHERE p.status = 'published'
ORDER BY p.created_at DESC, p.id DESC
LIMIT $1 OFFSET $2
"""
TOTAL_SQL = "SELECT n FROM post_counts WHERE kind = 'a' AND ref_id = 0"


def _iso_ms(moment: datetime) -> str:
    # fastpost.realworld.service.iso_ms: milliseconds and a zone, always.
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _article(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "slug": row["slug"],
        "title": row["title"],
        "description": row["description"],
        "tagList": row["tags"],
        "createdAt": _iso_ms(row["created_at"]),
        "updatedAt": _iso_ms(row["updated_at"]),
        "favorited": False,
        "favoritesCount": row["likes_count"],
        "author": {
            "username": row["username"],
            "bio": row["bio"],
            "image": row["image"],
            "following": False,
        },
    }


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)


def realworld_app() -> Starlette:
    """Serve `GET /api/articles?limit=N&offset=M` (anonymous, unfiltered) from PostgreSQL."""
    lifespan = pool_lifespan(default_min=1)

    async def list_articles(request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", 20))
            offset = int(request.query_params.get("offset", 0))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return _json({"errors": {"limit": ["is invalid"]}}, 422)
        pool = request.app.state.pool
        rows = await pool.fetch(ARTICLES_SQL, limit, offset)
        total = rows[0]["total"] if rows else await pool.fetchval(TOTAL_SQL)
        return _json({"articles": [_article(row) for row in rows], "articlesCount": total or 0})

    return Starlette(routes=[Route("/api/articles", list_articles)], lifespan=lifespan)
