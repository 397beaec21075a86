"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from fastpost.db import Database
from fastpost.routing import PrefixRouter

router = PrefixRouter(prefix="/health", tags=["health"])

# A readiness probe that hangs is worse than one that fails: a load balancer waits on it.
READY_TIMEOUT_SECONDS = 2.0
_PING = text("SELECT 1")


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    database: str
    reason: str | None = None


@router.get("")
async def health() -> HealthOut:
    """Liveness: the process answers. No I/O."""
    return HealthOut(status="ok")


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def ready(request: Request) -> ReadyOut | JSONResponse:
    """Readiness: the database answers a query."""
    db: Database = request.app.state.db
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await db.fetch_one(_PING)
    except Exception as exc:  # any failure means "not ready"; the reason says which
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return JSONResponse(
            ReadyOut(status="unavailable", database="down", reason=reason).model_dump(), 503
        )
    return ReadyOut(status="ok", database="up")
