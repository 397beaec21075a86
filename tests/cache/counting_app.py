"""fastpost, counting in Redis each database read of one post: lets a test see, across
worker processes, how many times a cold post was loaded. Serve it with
`uvicorn tests.cache.counting_app:create_app --factory --workers 2`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from fastapi import FastAPI

from fastpost import app as fastpost_app
from fastpost.db import Database, ReadStatement, Row

COUNTER = "test:post_detail_loads"


def create_app() -> FastAPI:
    counter = redis.Redis.from_url(os.environ["FASTPOST_REDIS_URL"])
    fetch_all = Database.fetch_all

    async def counting_fetch_all(
        self: Database, statement: ReadStatement, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row]:
        if params is not None and "post_id" in params:
            counter.incr(COUNTER)
        return await fetch_all(self, statement, params)

    Database.fetch_all = counting_fetch_all  # type: ignore[method-assign]
    return fastpost_app.create_app()
