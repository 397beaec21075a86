"""What a worker of `fastpost serve` runs: the app, in a process tuned for serving it.

create_app builds an app for any process (tests build hundreds in one, the benchmarks
several side by side); the garbage collector's settings belong to the whole process, so
tuning them is the decision of a process that does nothing but serve: the workers
`fastpost serve` starts, with FASTPOST_SERVE__TUNE_GC (on by default).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.settings import Settings

# The young generation's collection threshold while a worker serves (Python's default: 700).
# The threshold counts tracked objects allocated less those freed, so a server whose
# requests free what they allocate stays under it; its count rises only with what the
# requests in flight hold at once (thousands of objects at 64 connections on `GET /health`)
# and with garbage in cycles. At 700, the in-flight objects alone set off a collection every
# few dozen requests, each walking all of them and freeing nothing; at 50,000 there is room
# for requests that hold more, more of them at once, and a collection it sets off walks at
# most that many objects. No benchmark isolates it yet: compare `fastpost serve` with
# FASTPOST_SERVE__TUNE_GC=false under wrk, counting collections with gc.callbacks.
GC_YOUNG_THRESHOLD = 50_000


def tune_gc_while_serving(app: FastAPI) -> FastAPI:
    """Once the app has started, freeze what startup built and raise the young generation's
    threshold; undo both as it stops. Returns the app."""
    started = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with started(app):  # create_app's lifespan holds no state of its own
            thresholds = gc.get_threshold()
            # What startup built (modules, routes, schemas) lives as long as the process;
            # frozen, a full collection no longer walks it, while every request in flight
            # waits on it.
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
            try:
                yield
            finally:
                gc.set_threshold(*thresholds)
                gc.unfreeze()

    app.router.lifespan_context = lifespan
    return app


def create_worker_app() -> FastAPI:
    """The app a `fastpost serve` worker serves (uvicorn's and granian's factory)."""
    settings = Settings()
    app = create_app(settings)
    return tune_gc_while_serving(app) if settings.serve.tune_gc else app
