"""Every instance follows the shard map while it serves: a move changes it without restarts.

An instance reads the map on the directory every `shard_map_check_seconds` (the fallback,
always on), and at once when a move announces a change on Redis (MAP_CHANNEL, when the app
has Redis: the announcement saves up to one interval, the periodic read makes it optional).
Each read also records the instance in `shard_map_instances` with the versions it has
applied, a frozen entry's only once the writes to that logical shard that started before
the freeze have finished (router.Shards.in_flight). A move waits until every instance seen
within the lease has applied its freeze, and an instance that has not read the map for
that long stops writing (router.Shards.fresh_until) until it has: so a move never needs to
know how many instances run, and an instance cut off from the directory cannot write on an
old map.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from sqlalchemy import text

from fastpost.cache import PREFIX
from fastpost.db import Database
from fastpost.shards.router import Shards
from fastpost.shards.shard_map import read_shard_map

log = logging.getLogger(__name__)

MAP_CHANNEL = f"{PREFIX}:shard-map"


def lease_seconds(interval: float) -> float:
    """How long an instance's last read of the map lets it write; a move counts the
    instances seen within it. Several intervals, so that one slow read does not stop
    writes."""
    return max(5 * interval, 2.0)


_SEEN = text(
    "INSERT INTO shard_map_instances (instance, seen_at, versions) "
    "VALUES (:instance, now(), CAST(:versions AS bigint[])) "
    "ON CONFLICT (instance) DO UPDATE SET seen_at = now(), versions = excluded.versions"
)
_GONE = text("DELETE FROM shard_map_instances WHERE instance = :instance")


class MapWatch:
    """One instance's watch over the shard map (started and stopped by the app)."""

    def __init__(self, shards: Shards, *, interval: float, redis_url: str | None) -> None:
        self.shards = shards
        self.interval = interval
        self.redis_url = redis_url
        self.instance = uuid.uuid4().hex
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            # The directory is away for now: the poll below tries again, and until it
            # succeeds this instance's lease is not renewed, so its writes wait (router.py).
            log.warning("cannot read the shard map on the directory: %r", exc)
        self._tasks.append(asyncio.create_task(self._poll(), name="shard-map-watch"))
        if self.redis_url is not None:
            self._tasks.append(asyncio.create_task(self._listen(), name="shard-map-listener"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        with contextlib.suppress(Exception):
            async with self.shards.directory.write_engine.begin() as conn:
                await conn.execute(_GONE, {"instance": self.instance})

    async def refresh(self) -> None:
        """Read the map, serve by it, drain the writes to any shard it freezes, and say so."""
        started = time.monotonic()
        # On the engine, not through the Database's reader and transaction: what counts a
        # request's statements per database (tests/shards) sees requests only.
        engine = self.shards.directory.write_engine
        async with engine.connect() as conn:
            shard_map = await read_shard_map(conn, len(self.shards.databases))
        if shard_map != self.shards.map:
            self.shards.apply_map(shard_map)
        for logical in range(len(shard_map.states)):
            if shard_map.is_frozen(logical):
                await self.shards.drained(logical)
        async with engine.begin() as conn:
            await conn.execute(
                _SEEN, {"instance": self.instance, "versions": list(shard_map.versions)}
            )
        self.shards.renewed(started + lease_seconds(self.interval))

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The lease runs out if this goes on: writes then wait rather than go astray.
                log.warning("shard map check failed: %r", exc)

    async def _listen(self) -> None:
        """Wake the poll on every announcement; resubscribe after failures."""
        from fastpost.redis_client import connect, parse_redis_url

        location = parse_redis_url(self.redis_url or "")
        if location.cluster:
            # A classic PUBLISH reaches every node of a cluster; the poll covers it anyway.
            return
        redis: Any = connect(location, socket_connect_timeout=2, health_check_interval=10)
        try:
            while True:
                try:
                    async with redis.pubsub() as pubsub:
                        await pubsub.subscribe(MAP_CHANNEL)
                        async for message in pubsub.listen():
                            if message.get("type") == "message":
                                self._wake.set()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("shard map announcements unavailable: %r", exc)
                    await asyncio.sleep(0.5)
        finally:
            await redis.aclose()


async def announce(redis_url: str | None) -> None:
    """Tell every instance listening that the map changed (best effort: they poll too)."""
    if redis_url is None:
        return
    from fastpost.redis_client import connect, parse_redis_url

    location = parse_redis_url(redis_url)
    if location.cluster:
        return
    redis: Any = connect(location, socket_connect_timeout=2, socket_timeout=2)
    try:
        await redis.publish(MAP_CHANNEL, "changed")
    except Exception as exc:
        log.warning("could not announce the shard map change: %r", exc)
    finally:
        await redis.aclose()


_LAGGING = text(
    "SELECT count(*) FROM shard_map_instances "
    "WHERE seen_at > now() - make_interval(secs => :lease) AND versions[:position] < :version"
)


async def wait_for_instances(
    directory: Database, *, logical: int, version: int, lease: float, within: float
) -> None:
    """Return once every instance seen within the lease has applied `version` of the entry
    (for a freeze: with its writes to that shard drained); TimeoutError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        async with directory.reader() as conn:
            lagging = int(
                await conn.scalar(
                    _LAGGING, {"lease": lease, "position": logical + 1, "version": version}
                )
                or 0
            )
        if not lagging:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{lagging} instances have not applied version {version} of logical shard {logical}"
            )
        await asyncio.sleep(0.05)
