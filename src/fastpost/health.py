"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import make_url

from fastpost.db import Database, DatabaseUnavailable, primary_reads
from fastpost.routing import PlainRoute, PrefixRouter

router = PrefixRouter(prefix="/health", tags=["health"])

# A readiness probe that hangs is worse than one that fails: a load balancer waits on it.
READY_TIMEOUT_SECONDS = 2.0
_PING = text("SELECT 1")


class HealthOut(BaseModel):
    status: str


class ReplicaOut(BaseModel):
    replica: str  # host:port
    in_rotation: bool
    lag_seconds: float | None  # None: unknown (unreachable, or not a replica)
    replay_lsn: str | None
    reason: str | None  # why it is out of rotation


class ShardDatabaseOut(BaseModel):
    database: str  # host:port/name: never the password
    up: bool
    reason: str | None = None  # why it did not answer


class ReadyOut(BaseModel):
    status: str
    database: str
    reason: str | None = None
    # Read replicas as each worker's monitor last saw them (no I/O here): a replica out of
    # rotation leaves the instance ready, since the primary takes its reads.
    replicas: list[ReplicaOut] = []
    # Sharded mode: every database, the directory first, each asked now. The instance stays
    # ready while the directory answers: a shard that does not fails only the requests that
    # need it, on every instance alike, so taking instances out would fail the rest too.
    shards: list[ShardDatabaseOut] = []


@router.get("")
async def health() -> HealthOut:
    """Liveness: the process answers. No I/O."""
    return HealthOut(status="ok")


_OK = HealthOut(status="ok").model_dump_json().encode()


async def plain_health(request: Request) -> Response:
    """`health` as a plain route (fastpost.routing.PlainRoute): the answer that it sends,
    without FastAPI's request handling, which a probe polled every second pays for nothing."""
    return Response(_OK, media_type="application/json")


# Served in place of the route above, which stays to document the operation.
plain_routes = (PlainRoute(router.prefix, plain_health, methods=["GET"], include_in_schema=False),)


@router.get("/ready", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def ready(request: Request) -> ReadyOut | JSONResponse:
    """Readiness: the database (the primary; sharded, the directory) answers a query; each
    replica's state; sharded, each database's."""
    db: Database = request.app.state.db
    replicas = [ReplicaOut(**r) for r in db.replicas.status()] if db.replicas else []
    shards = getattr(request.app.state, "shards", None)
    if shards is None:
        reason = await _why_not_answering(db)
        listed: list[ShardDatabaseOut] = []
    else:
        # The directory is the first database (fastpost.shards.router.Shards.directory).
        reasons = await asyncio.gather(*map(_why_not_answering, shards.databases))
        reason = reasons[0]
        listed = [
            ShardDatabaseOut(database=_label(each), up=why is None, reason=why)
            for each, why in zip(shards.databases, reasons, strict=True)
        ]
    if reason is not None:
        out = ReadyOut(
            status="unavailable", database="down", reason=reason, replicas=replicas, shards=listed
        )
        return JSONResponse(out.model_dump(), 503)
    return ReadyOut(status="ok", database="up", replicas=replicas, shards=listed)


async def _why_not_answering(db: Database) -> str | None:
    """None when the database (its primary) answers a query in time; else why not."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            with primary_reads():
                await db.fetch_one(_PING)
    except Exception as exc:  # any failure means "not ready"; the reason says which
        # What made the database unavailable: refused, timed out, shutting down.
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else None
        return f"{type(cause or exc).__name__}: {cause or exc}".splitlines()[0][:300]
    return None


def _label(db: Database) -> str:
    url = make_url(db.settings.url)
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
