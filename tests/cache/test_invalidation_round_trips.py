"""An invalidation costs one Redis round trip, whatever the number of keys and tags: counted
by the commands a private redis-server receives (MONITOR), not by a mock."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from fastpost.cache import Cache, Entry, generation_key, redis_key
from tests.cache.conftest import PrivateRedis

END = "end-of-invalidation"


async def _commands_sent_by_clients(url: str, ready: asyncio.Event) -> list[str]:
    """Every command clients send (not those a Lua script runs), from when `ready` is set
    until an ECHO of END."""
    client = aioredis.Redis.from_url(url, decode_responses=True)
    commands: list[str] = []
    try:
        async with client.monitor() as monitor:
            ready.set()
            async for info in monitor.listen():
                if info["command"] == f"ECHO {END}":
                    return commands
                if info["client_type"] != "lua":
                    commands.append(info["command"].split(" ", 1)[0].upper())
    finally:
        await client.aclose()
    return commands


async def _entry(body: bytes) -> Entry:
    return Entry.of(body)


async def test_an_invalidation_of_many_keys_and_tags_is_one_round_trip(
    private_redis: PrivateRedis,
) -> None:
    cache = Cache(redis_url=private_redis.url)
    other = Cache(redis_url=private_redis.url)
    # Connected before the count starts: its handshake is not the cache's doing.
    marker = aioredis.Redis.from_url(private_redis.url)
    await marker.ping()
    await cache.start()
    await other.start()
    try:
        tags = [f"tag{i}" for i in range(5)]
        for i in range(10):
            await other.get_or_load(
                f"key{i}", lambda i=i: _entry(b"v%d" % i), ttl=60, tags=[tags[i % 5]]
            )
        # The script is loaded into Redis by the first invalidation a server sees.
        await cache.invalidate(keys=["warm-up"])

        ready = asyncio.Event()
        watcher = asyncio.create_task(_commands_sent_by_clients(private_redis.url, ready))
        await ready.wait()
        await cache.invalidate(keys=["key0", "unrelated"], tags=tags)
        await marker.echo(END)
        sent = await asyncio.wait_for(watcher, 10)

        assert sent == ["EVALSHA"]
        # And it did the whole job: every key stored under the tags is gone from Redis, its
        # generation moved on, and the other worker's tier 1 dropped it.
        for i in range(10):
            assert await marker.get(redis_key(f"key{i}")) is None
            assert await marker.get(generation_key(f"key{i}")) == b"1"
        for _ in range(100):
            if len(other.local) == 0:
                break
            await asyncio.sleep(0.01)
        assert len(other.local) == 0
    finally:
        await cache.close()
        await other.close()
        await marker.aclose()
