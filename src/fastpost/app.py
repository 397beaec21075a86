"""create_app(settings): lifespan, middleware, routers. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fastpost import health
from fastpost.db import Database
from fastpost.errors import install_error_handlers
from fastpost.middleware import BodySizeLimit
from fastpost.posts.router import router as posts_router
from fastpost.posts.router import user_posts_router
from fastpost.security import Passwords, Tokens
from fastpost.settings import Settings
from fastpost.social.router import feed_router
from fastpost.social.router import router as social_router
from fastpost.users.router import auth_router, users_router

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.basicConfig(level=settings.observability.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.db)
        await db.connect()
        app.state.db = db
        try:
            yield
        finally:
            await db.dispose()

    app = FastAPI(
        title="fastpost",
        version=__version__,
        summary="A blog and social REST API built for speed, with the tools that prove it.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Built here, not per request: the hasher's parameters and the signing key are fixed.
    app.state.passwords = Passwords(settings)
    app.state.tokens = Tokens(settings)

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)

    # Routes are matched in order, one regular expression each: the hottest reads first.
    app.include_router(posts_router)
    app.include_router(feed_router)
    app.include_router(users_router)
    app.include_router(user_posts_router)
    app.include_router(social_router)
    app.include_router(auth_router)
    app.include_router(health.router)
    return app
