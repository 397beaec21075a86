"""Each app owns what it records (fastpost.observability.state): two apps in one process
never see each other's served requests, access lines or statements."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.observability.request_stats import RequestStats
from fastpost.observability.state import Observability
from fastpost.settings import Settings


class Watched:
    """What one app recorded: its served requests, its access lines, its statements."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.observability: Observability = app.state.observability
        self.served: list[bytes] = []
        self.statements: list[str] = []
        self.stream = io.StringIO()
        self.observability.served.sinks.append(self._served)
        self.observability.statements.hooks.append(
            lambda sql, _seconds, _parameters: self.statements.append(sql)
        )
        self.observability.access_log.configure("INFO", True, self.stream)

    def _served(self, batch: list[RequestStats]) -> None:
        self.served.extend(stats.request_id for stats in batch)

    @property
    def access_lines(self) -> str:
        self.observability.access_log.flush()
        return self.stream.getvalue()

    async def get(self, path: str, request_id: str) -> None:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path, headers={"x-request-id": request_id})
        assert response.status_code == 200


@asynccontextmanager
async def two_apps(settings: Settings) -> AsyncIterator[tuple[Watched, Watched]]:
    async with AsyncExitStack() as stack:
        apps = [create_app(settings), create_app(settings)]
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield Watched(apps[0]), Watched(apps[1])


async def test_a_request_to_one_app_is_recorded_by_that_app_alone(settings: Settings) -> None:
    async with two_apps(settings) as (one, other):
        assert one.observability is not other.observability
        await one.get("/posts/", "to-one")
        await other.get("/health", "to-other")
        one.observability.flush_metrics()
        other.observability.flush_metrics()

        assert one.served == [b"to-one"]
        assert other.served == [b"to-other"]
        assert "to-one" in one.access_lines
        assert "to-one" not in other.access_lines
        assert "to-other" in other.access_lines
        assert "to-other" not in one.access_lines
        # The list of posts reads the database; the health check does not.
        assert any("posts" in statement for statement in one.statements)
        assert other.statements == []
