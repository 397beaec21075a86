"""create_app(settings): lifespan, middleware, routers. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.middleware.cors import CORSMiddleware

from fastpost import health
from fastpost.api_contract import install_contract
from fastpost.api_docs import install_offline_docs
from fastpost.cache import build_cache
from fastpost.closing import stop_task
from fastpost.comments import router as comments_routes
from fastpost.comments.router import router as comments_router
from fastpost.db import Database
from fastpost.errors import install_error_handlers
from fastpost.http_caching import CachedPostReads
from fastpost.idempotency import IdempotencyKeys
from fastpost.observability import loop_lag
from fastpost.observability.edge import Edge
from fastpost.observability.logging import configure_logging
from fastpost.observability.metrics import cache_event, count_served, metrics_endpoint
from fastpost.observability.metrics_access import MetricsAccess
from fastpost.observability.perf_page import install_perf_page
from fastpost.observability.state import Observability
from fastpost.observability.statements import SlowQueryLog
from fastpost.overload import ShedOverload
from fastpost.posts import router as posts_routes
from fastpost.posts.router import router as posts_router
from fastpost.posts.router import tags_router, user_posts_router
from fastpost.rate_limits import RateLimitLayer, RateLimits, document_limits
from fastpost.realworld import router as realworld_routes
from fastpost.realworld.errors import install_realworld_errors
from fastpost.realworld.router import PREFIX as REALWORLD_PREFIX
from fastpost.realworld.router import router as realworld_router
from fastpost.replicas import ReadYourWrites, position_ttl_seconds
from fastpost.routing import add_lean_routes, add_plain_routes, build_routing_now
from fastpost.security import Passwords, Tokens
from fastpost.security_headers import SecurityHeaders
from fastpost.settings import Settings
from fastpost.social import router as social_routes
from fastpost.social.router import feed_router
from fastpost.social.router import router as social_router
from fastpost.users import router as users_routes
from fastpost.users.router import auth_router, refuse_gone_account, users_router

__version__ = "0.1.0"


_NO_NATIVE_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    observability = settings.observability
    # What this app records about itself, its own: kept on app.state, bound into the edge.
    recorded = Observability()
    # The sinks of its served requests: the metrics count them, the access log writes them.
    recorded.served.sinks.append(count_served)
    recorded.served.sinks.append(recorded.access_log.log_served)
    configure_logging(
        level=observability.log_level,
        json=observability.log_format == "json"
        or (observability.log_format == "auto" and settings.env == "production"),
        access_lines=observability.access_log,
        access_log=recorded.access_log,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        shards = None
        map_watch = None
        if settings.db.shards:
            from fastpost.shards.router import Shards

            shards = Shards(
                settings.db,
                statement_timeout=settings.db.statement_timeout or None,
                statements=recorded.statements,
            )
            await shards.connect()
            app.state.shards = shards
            from fastpost.shards.map_watch import MapWatch

            # Follows the shard map while serving: a move needs no restart.
            map_watch = MapWatch(
                shards,
                interval=settings.db.shard_map_check_seconds,
                redis_url=settings.redis_url,
            )
            await map_watch.start()
            # The directory: what reads app.state.db (health, idempotency keys) finds it.
            db = shards.directory
        else:
            db = Database(
                settings.db,
                redis_url=settings.redis_url,
                statement_timeout=settings.db.statement_timeout or None,
                statements=recorded.statements,
            )
            await db.connect()
        app.state.db = db
        replica_monitor = None
        if db.replicas is not None:
            # Checked once before serving, so that the first reads already find them.
            await db.replicas.check()
            replica_monitor = asyncio.create_task(db.replicas.monitor(), name="replica-monitor")
        if observability.slow_query_ms is not None:
            recorded.statements.slow_query_log = SlowQueryLog(
                observability.slow_query_ms / 1000,
                explain=db.explain if db.dialect == "postgresql" else None,
            )
        recorded.start_serving(
            db.pool_usage if shards is None else shards.pool_usage,
            flush_interval=observability.metrics_flush_seconds,
            sample_interval=observability.sample_interval_seconds,
        )
        loop_lag_watch = loop_lag.start_watching(observability.loop_lag_interval_seconds)
        cache = build_cache(settings, on_event=cache_event)
        await cache.start()
        app.state.cache = cache
        # Tests build hundreds of apps and route a few requests through each: for them the
        # start-up work that pays off over a server's life costs more than it saves.
        if settings.env != "test" or settings.profiling:
            build_routing_now(app)
        try:
            yield
        finally:
            if replica_monitor is not None:
                await stop_task(replica_monitor)
            await stop_task(loop_lag_watch)
            await recorded.stop_serving()
            recorded.statements.slow_query_log = None
            await cache.close()
            if app.state.error_reporter is not None:  # what is queued is sent before we exit
                await asyncio.to_thread(app.state.error_reporter.flush)
            if app.state.rate_limits is not None:
                await app.state.rate_limits.close()
            if map_watch is not None:
                await map_watch.stop()
            if shards is not None:
                await shards.dispose()
            else:
                await db.dispose()

    app = FastAPI(
        title="fastpost",
        version=__version__,
        summary="A blog and social REST API built for speed, with the tools that prove it.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry (0.165+) asks the global providers whether tracing
        # is configured on every request, reading environment variables each time: a large
        # share of a `GET /health` (`fastpost profile GET /health` shows it with this line
        # removed). Tracing is fastpost.observability.tracing's job, opt-in.
        telemetry=_NO_NATIVE_TELEMETRY,
        # Served by install_offline_docs below, from local files instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.observability = recorded
    # Built here, not per request: the hasher's parameters and the signing key are fixed.
    app.state.passwords = Passwords(settings)
    app.state.tokens = Tokens(settings)
    # Every authenticated request asks whether its token's account still exists.
    app.state.account_check = refuse_gone_account
    security_headers = SecurityHeaders(
        hsts_seconds=settings.security.hsts_seconds if settings.env == "production" else 0
    )
    app.state.rate_limits = (
        RateLimits(settings.rate_limits, settings.redis_url) if settings.rate_limited else None
    )

    install_error_handlers(app)
    install_realworld_errors(app, REALWORLD_PREFIX)
    app.state.error_reporter = None
    if settings.sentry_dsn:
        from fastpost.observability.sentry import ErrorReporter, install_error_reporting

        reporter = ErrorReporter(settings.sentry_dsn, environment=settings.env, release=__version__)
        install_error_reporting(app, reporter)
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
    # Outside the idempotency layer (a refused request claims no key), inside the CORS layer
    # (a 429 carries CORS headers) and the cached reads (a cached answer costs no count).
    if settings.rate_limited:
        app.add_middleware(RateLimitLayer)
    # Outside the rate limits and the idempotency layer (a flood is shed before it costs a
    # count or a claim; a 503 raised in them is answered here), inside the cached reads (a
    # cache hit waits on nothing: never shed) and the CORS layer (a 503 carries its headers).
    if settings.api.max_requests_in_flight:
        app.add_middleware(
            ShedOverload,
            max_in_flight=settings.api.max_requests_in_flight,
            realworld_prefix=REALWORLD_PREFIX,
        )
    # Inside the edge, so that its hits are counted and logged too.
    app.add_middleware(
        CachedPostReads,
        shared_max_age_seconds=settings.cache.shared_max_age_seconds,
        serve_hits=settings.cache.enabled,
    )
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
        from fastpost.observability.tracing import install_tracing, tracing_wanted

        if tracing_wanted(observability.tracing):
            install_tracing(
                app, "sqlite" if settings.db.is_sqlite else "postgresql", recorded.statements
            )
    if settings.profiling:
        from fastpost.observability.profiling import ProfileRequests

        app.add_middleware(ProfileRequests, loopback_allowed=settings.env != "production")
    # Outermost, so that it times and counts everything, 413s included.
    app.add_middleware(
        Edge,
        max_body_bytes=settings.api.max_body_bytes,
        n_plus_one_threshold=observability.n_plus_one_threshold,
        security_headers=security_headers,
        server_timing=observability.server_timing
        if observability.server_timing is not None
        else settings.env != "production",
        served=recorded.served,
    )

    if settings.db.shards:
        from fastpost.shards.api import include_sharded_routes
        from fastpost.shards.realworld import include_realworld_routes

        # Sharded mode's own routes (fastpost.shards), 501 for those not ported yet, and
        # the RealWorld API over them (fastpost.shards.realworld).
        include_sharded_routes(
            app,
            (
                posts_router,
                users_router,
                comments_router,
                tags_router,
                feed_router,
                user_posts_router,
                social_router,
                auth_router,
            ),
        )
        app.include_router(health.router)
        add_plain_routes(app, *health.plain_routes)
        include_realworld_routes(app)
    else:
        _include_unsharded_routes(app)
    # An API route, not a plain Starlette one: only those name themselves in the scope, and a
    # scrape counted under "unmatched" would pass for a stray request.
    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        include_in_schema=False,
        # In production, only to configured addresses or a bearer token (404 otherwise).
        dependencies=[Depends(MetricsAccess(settings))],
    )
    # The live performance page, to whoever may read /metrics.
    install_perf_page(app, settings, security_headers)
    if settings.rate_limited:
        document_limits(app, REALWORLD_PREFIX)
    # After every route and error handler: what the framework answers, declared and shaped.
    install_contract(app, REALWORLD_PREFIX)
    # Last: nobody measures the speed of the documentation pages.
    install_offline_docs(app)
    # After the pages exist: their policy allows their inline scripts by hash.
    security_headers.protect_pages(app)
    return app


def _include_unsharded_routes(app: FastAPI) -> None:
    # Routes are matched in order, one regular expression each: the hottest reads first.
    app.include_router(posts_router)
    # Second: GET /users/me is the other read of the mixed workload (loadtests/locustfile.py).
    app.include_router(users_router)
    app.include_router(comments_router)
    app.include_router(tags_router)
    app.include_router(feed_router)
    app.include_router(user_posts_router)
    app.include_router(social_router)
    app.include_router(auth_router)
    app.include_router(health.router)
    add_plain_routes(app, *health.plain_routes)
    app.include_router(realworld_router)
    # Tried before every router, and served without FastAPI's request handling: routes that
    # take only the request, integer path parameters, query parameters, a JSON model body and
    # request-only dependencies, and return a Response (fastpost.routing.LeanRoute says why;
    # it refuses any other).
    add_lean_routes(
        app,
        posts_routes.read_post,
        posts_routes.list_posts,
        posts_routes.create_post,
        posts_routes.popular_posts,
        posts_routes.search_posts,
        posts_routes.list_user_posts,
        posts_routes.list_tags,
        posts_routes.like_post,
        posts_routes.unlike_post,
        comments_routes.list_comments,
        users_routes.read_me,
        users_routes.read_user,
        social_routes.feed,
        social_routes.overview,
        social_routes.followers,
        social_routes.following,
        social_routes.friends,
        social_routes.follow,
        social_routes.unfollow,
        realworld_routes.list_articles,
        realworld_routes.create_article,
        realworld_routes.feed,
        realworld_routes.current_user,
        realworld_routes.list_tags,
    )
