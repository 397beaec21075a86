"""What a logged-in read of a cached page costs, piece by piece: in-process CPU per call.

    .venv/bin/python -m benchmarks.bench_logged_in \\
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/DB [--redis-url URL]

DB must be migrated and seeded (`fastpost seed --users 100 --posts 1000`). Process CPU time
per call, the best of several rounds (fastpost.bench.in_process explains why), for:
- the caller's flags for a page of 20 posts: the one statement through Database.fetch_all
  (what posts.service does), beside Redis SMISMEMBER on a per-user set of liked ids alone
  and pipelined with an MGET of the 20 likes counts (the alternative it was chosen over);
- completing the cached page of 20 for the caller: splicing per-post fragments
  (fastpost.fragments), beside merging the flags into the parsed page's dicts and
  serialising it again with orjson;
- the page as a logged-in caller gets it: fastpost.posts.service.first_page_for_viewer
  (warm cache), beside list_posts reading the whole page with the caller's flags (what
  every logged-in GET /posts/ did before).
Each line prints the ratio of the first figure to the second, both measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from fastpost import fragments
from fastpost.cache import Cache
from fastpost.db import Database
from fastpost.pagination import Page
from fastpost.posts import service
from fastpost.settings import DatabaseSettings

ROUNDS = 7
CALLS = 500


async def _cpu(call: Callable[[], Awaitable[Any]]) -> float:
    """Best per-call process CPU time of ROUNDS rounds, in microseconds."""
    for _ in range(50):
        await call()
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(CALLS):
            await call()
        best = min(best, (time.process_time() - started) / CALLS * 1e6)
    return best


def _line(name: str, ours: float, theirs: float, baseline: str) -> None:
    print(f"{name:44s} {ours:7.1f} us  vs {baseline}: {theirs:7.1f} us  ({ours / theirs:.2f}x)")


async def benchmark(database_url: str, redis_url: str | None) -> None:
    db = Database(DatabaseSettings(url=database_url))
    await db.connect()
    cache = Cache()
    try:
        page = await service.list_posts(db=db, viewer_id=None, page=Page(20, None, 0))
        ids = [item["id"] for item in page["items"]]
        viewer = (await db.fetch_all(service.users.select().limit(1)))[0]["id"]

        async def flags() -> Any:
            return await service._viewer_ends(db, viewer, ids)

        statement = await _cpu(flags)
        if redis_url is not None:
            import redis.asyncio as redis

            client = redis.Redis.from_url(redis_url)
            key = f"bench-logged-in:{viewer}"
            await client.sadd(key, *ids[::3])
            counts = [f"bench-logged-in:count:{post_id}" for post_id in ids]
            await client.mset(dict.fromkeys(counts, 1))

            async def members() -> Any:
                return await client.smismember(key, ids)

            async def members_and_counts() -> Any:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.smismember(key, ids)
                    pipe.mget(counts)
                    return await pipe.execute()

            _line("flags: 1 statement", statement, await _cpu(members), "SMISMEMBER")
            _line("flags: 1 statement", statement, await _cpu(members_and_counts), "+ MGET")
            await client.delete(key, *counts)
            await client.aclose()

        entry = await service.cached_first_page(db=db, cache=cache, limit=20)
        shared = fragments.derived(entry, "posts", service._split_post_page)
        ends = await flags()
        parsed = orjson.loads(entry.body)

        async def splice() -> bytes:
            return shared.complete(ends)

        async def merge_and_dump() -> bytes:
            items = [{**item, "likes_count": 1, "liked_by_me": True} for item in parsed["items"]]
            return orjson.dumps({"items": items, "next_cursor": parsed["next_cursor"]})

        _line("complete 20 posts: splice", await _cpu(splice), await _cpu(merge_and_dump), "orjson")

        async def now() -> bytes:
            return await service.first_page_for_viewer(
                db=db, cache=cache, viewer_id=viewer, limit=20
            )

        async def before() -> Any:
            return await service.list_posts(db=db, viewer_id=viewer, page=Page(20, None, 0))

        _line("logged-in page of 20: cached + flags", await _cpu(now), await _cpu(before), "read")
    finally:
        await db.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_logged_in")
    parser.add_argument("--database-url", required=True, help="a migrated, seeded database")
    parser.add_argument("--redis-url", default=None, help="compare with a Redis set per user")
    args = parser.parse_args(argv)
    asyncio.run(benchmark(args.database_url, args.redis_url))


if __name__ == "__main__":
    main()
