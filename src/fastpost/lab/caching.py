"""6. Post detail with the cache cold and warm, through fastpost's real app (ASGI, in
process) and its two-tier cache; tier 2 (Redis) when the lab is given a Redis URL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from fastpost.app import create_app
from fastpost.cache import Cache
from fastpost.cache_keys import post as post_key
from fastpost.lab.context import Lab
from fastpost.lab.measure import median
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.observability.statements import record_statements
from fastpost.posts.models import PostStatus


async def published_post_ids(lab: Lab, count: int) -> list[int]:
    async with lab.db.reader() as conn:
        rows = await conn.execute(
            text("SELECT id FROM posts WHERE status = :s ORDER BY id LIMIT :n"),
            {"s": PostStatus.published.value, "n": count},
        )
        return [int(r[0]) for r in rows]


async def measure_requests(
    client: httpx.AsyncClient,
    post_ids: list[int],
    before_each: Callable[[int], Awaitable[None]],
) -> tuple[list[float], list[int]]:
    """GET /posts/{id} for each id: seconds and statements of each request (the
    preparation `before_each` runs outside the timing)."""
    seconds: list[float] = []
    queries: list[int] = []
    for post_id in post_ids:
        await before_each(post_id)
        with record_statements() as log:
            started = time.perf_counter()
            response = await client.get(f"/posts/{post_id}")
            seconds.append(time.perf_counter() - started)
        response.raise_for_status()
        queries.append(len(log))
    return seconds, queries


async def run(lab: Lab) -> ExperimentResult:
    """Request post detail pages through the app with the cache cold, then warm."""
    config = lab.config
    post_ids = await published_post_ids(lab, config.cache_requests)
    if not post_ids:
        raise RuntimeError("the cache experiment needs published posts")
    settings = lab.seeded.settings
    tier2 = settings.redis_url is not None
    result = ExperimentResult(
        key="cache",
        title="6. Cache cold vs warm: GET /posts/{id}",
        why="a warm cache answers from memory: no query, no serialisation",
    )
    app: FastAPI = create_app(settings)
    size = f"{len(post_ids)} posts"
    async with app.router.lifespan_context(app):
        cache: Cache = app.state.cache
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as client:

            async def empty_cache(post_id: int) -> None:
                # Both tiers, as a write to the post would.
                await cache.invalidate(keys=[post_key(post_id)])

            async def empty_tier1(post_id: int) -> None:
                cache.local.drop(post_key(post_id))

            async def nothing(post_id: int) -> None:
                return None

            variants: list[tuple[str, Callable[[int], Awaitable[None]], bool, str]] = [
                ("cold (cache emptied)", empty_cache, False, "database"),
            ]
            if tier2:
                variants.append(("warm tier 2 (Redis)", empty_tier1, False, "redis"))
            variants.append(("warm tier 1 (in process)", nothing, True, "memory"))
            timings: dict[str, list[float]] = {name: [] for name, *_ in variants}
            queries: dict[str, list[int]] = {name: [] for name, *_ in variants}
            for _ in range(max(1, lab.repeat)):
                for name, before_each, _, _ in variants:
                    if name != variants[0][0]:
                        # The cold pass's invalidations reach this process's own listener
                        # over Redis pub/sub: let them land, then fill both tiers.
                        await asyncio.sleep(0.1)
                        await measure_requests(client, post_ids, nothing)
                    seconds, counts = await measure_requests(client, post_ids, before_each)
                    timings[name].extend(seconds)
                    queries[name].extend(counts)
            for name, _, is_fix, served_from in variants:
                result.add(
                    Measurement(
                        name,
                        size,
                        median(timings[name]) * 1000,
                        queries=max(queries[name]),
                        is_fix=is_fix,
                        details={
                            "per": "request (median)",
                            "served_from": served_from,
                            "mean_queries": sum(queries[name]) / len(queries[name]),
                        },
                    )
                )
            result.extra = {"cache_stats": {f"{t}:{e}": n for (t, e), n in cache.stats.items()}}
    result.set_ratios()
    cold = result.variant("cold (cache emptied)")
    warm = result.variant("warm tier 1 (in process)")
    result.verdict = (
        f"cold: {cold.queries} query and {(cold.ratio or 0):.1f}x the time of warm, which made "
        f"{warm.queries} queries" + ("" if tier2 else " (no --redis-url: tier 1 only)")
    )
    result.verdict_params = {
        "cold_queries": cold.queries,
        "ratio": cold.ratio or 0,
        "warm_queries": warm.queries,
        "tier_note": "" if tier2 else "lab.cache.tier1_only",
    }
    return result
