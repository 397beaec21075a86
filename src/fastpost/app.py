"""create_app(settings): lifespan, middleware, routers. Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.middleware.cors import CORSMiddleware

from fastpost import health, querylog, served
from fastpost.cache import build_cache
from fastpost.comments.router import router as comments_router
from fastpost.db import Database
from fastpost.errors import install_error_handlers
from fastpost.http_caching import CachedPostReads
from fastpost.idempotency import IdempotencyKeys
from fastpost.logging import access, configure_logging
from fastpost.metrics import cache_event, flush_and_sample_forever, metrics_endpoint
from fastpost.middleware import Edge
from fastpost.posts.router import router as posts_router
from fastpost.posts.router import tags_router, user_posts_router
from fastpost.realworld.errors import install_realworld_errors
from fastpost.realworld.router import PREFIX as REALWORLD_PREFIX
from fastpost.realworld.router import router as realworld_router
from fastpost.replicas import ReadYourWrites, position_ttl_seconds
from fastpost.routing import build_routing_now
from fastpost.security import Passwords, Tokens
from fastpost.settings import Settings
from fastpost.social.router import feed_router
from fastpost.social.router import router as social_router
from fastpost.users.router import auth_router, users_router

__version__ = "0.1.0"


# The young generation's collection threshold while the app serves (Python's default: 700).
# The threshold counts tracked objects allocated less those freed, so a server whose requests
# free what they allocate stays under it; its count rises only with what requests in flight
# hold at once (at most 4,441 at 64 connections on `GET /health`) and with garbage in
# cycles. At 700, the in-flight objects alone set off a collection every 50 requests, and
# each walked all of them: 2-2.5% of a worker's time, none of it freeing anything (gc
# callbacks under wrk, this machine). At 7,000 none ran in 80,000 requests. 50,000 leaves
# room for requests that hold more, more of them at once; a collection it sets off walks at
# most that many objects: 1.1 ms (timed, this machine).
GC_YOUNG_THRESHOLD = 50_000

_NO_NATIVE_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    observability = settings.observability
    configure_logging(
        level=observability.log_level,
        json=observability.log_format == "json"
        or (observability.log_format == "auto" and settings.env == "production"),
        access_lines=observability.access_log,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db, redis_url=settings.redis_url)
        await db.connect()
        app.state.db = db
        replica_monitor = None
        if db.replicas is not None:
            # Checked once before serving, so that the first reads already find them.
            await db.replicas.check()
            replica_monitor = asyncio.create_task(db.replicas.monitor(), name="replica-monitor")
        if observability.slow_query_ms is not None:
            querylog.slow_query_log = querylog.SlowQueryLog(
                observability.slow_query_ms / 1000,
                explain=db.explain if db.dialect == "postgresql" else None,
            )
        sampler = asyncio.create_task(
            flush_and_sample_forever(
                db.pool_usage,
                flush_interval=observability.metrics_flush_seconds,
                sample_interval=observability.sample_interval_seconds,
            )
        )
        cache = build_cache(settings, on_event=cache_event)
        await cache.start()
        app.state.cache = cache
        # Served requests reach the metrics and the access log a batch at a time, except
        # where a developer watches the access lines on a console, each as it happens.
        if not access.to_console:
            served.start_batching()
        access_log_flusher = access.start_batching()
        # Tests build hundreds of apps and route a few requests through each: for them the
        # start-up work that pays off over a server's life costs more than it saves.
        serving = settings.env != "test"
        if serving or settings.profiling:
            build_routing_now(app)
        gc_thresholds = gc.get_threshold()
        if serving:
            # What startup built (modules, routes, schemas: about 110,000 objects) lives as
            # long as the process; frozen, a full collection no longer walks it. Unfrozen,
            # each full collection took about 100 ms, every request in flight waiting on it
            # (gc callbacks in a worker under wrk, this machine).
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc_thresholds[1:])
        try:
            yield
        finally:
            if replica_monitor is not None:
                replica_monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replica_monitor
            sampler.cancel()
            access_log_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            with contextlib.suppress(asyncio.CancelledError):
                await access_log_flusher
            served.stop_batching()
            access.stop_batching()
            if serving:  # an app run inside a longer process (tests) leaves no trace
                gc.set_threshold(*gc_thresholds)
                gc.unfreeze()
            await querylog.wait_for_explains()
            if observability.slow_query_ms is not None:
                querylog.slow_query_log = None
            await cache.close()
            await db.dispose()

    app = FastAPI(
        title="fastpost",
        version=__version__,
        summary="A blog and social REST API built for speed, with the tools that prove it.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry (0.165+) asks the global providers whether tracing
        # is configured on every request, reading environment variables each time: 15% of a
        # `GET /health` (cProfile, this machine). Tracing is fastpost.tracing's job, opt-in.
        telemetry=_NO_NATIVE_TELEMETRY,
    )
    app.state.settings = settings
    # Built here, not per request: the hasher's parameters and the signing key are fixed.
    app.state.passwords = Passwords(settings)
    app.state.tokens = Tokens(settings)

    install_error_handlers(app)
    install_realworld_errors(app, REALWORLD_PREFIX)
    if settings.db.replica_urls:
        # Innermost: it reads the client's WAL position before any read, and sets it after
        # a write; the cached answers outside it touch no database.
        app.add_middleware(ReadYourWrites, max_age_seconds=position_ttl_seconds(settings.db))
    # Inside the CORS layer, so that a replayed answer carries CORS headers too; inside the
    # cached reads, so that a GET answered from tier 1 does not pass through it.
    app.add_middleware(
        IdempotencyKeys,
        ttl_seconds=settings.api.idempotency_ttl_seconds,
        lock_seconds=settings.api.idempotency_lock_seconds,
        realworld_prefix=REALWORLD_PREFIX,
    )
    # Inside the edge, so that its hits are counted and logged too.
    app.add_middleware(CachedPostReads)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Requested-With", "Idempotency-Key"],
            expose_headers=["Idempotency-Replayed"],
            max_age=600,
        )
    if observability.tracing != "off":
        from fastpost.tracing import install_tracing, tracing_wanted

        if tracing_wanted(observability.tracing):
            install_tracing(app, "sqlite" if settings.db.is_sqlite else "postgresql")
    if settings.profiling:
        from fastpost.profiling import ProfileRequests

        app.add_middleware(ProfileRequests, loopback_allowed=settings.env != "production")
    # Outermost, so that it times and counts everything, 413s included.
    app.add_middleware(
        Edge,
        max_body_bytes=settings.api.max_body_bytes,
        n_plus_one_threshold=observability.n_plus_one_threshold,
    )

    # Routes are matched in order, one regular expression each: the hottest reads first.
    app.include_router(posts_router)
    # Second: GET /users/me is the course's mixed workload's other read.
    app.include_router(users_router)
    app.include_router(comments_router)
    app.include_router(tags_router)
    app.include_router(feed_router)
    app.include_router(user_posts_router)
    app.include_router(social_router)
    app.include_router(auth_router)
    app.include_router(health.router)
    app.include_router(realworld_router)
    # An API route, not a plain Starlette one: only those name themselves in the scope, and a
    # scrape counted under "unmatched" would pass for a stray request.
    app.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    return app
