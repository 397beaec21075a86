"""The cache on a real 3-master Redis Cluster: keys placed by hash tag, invalidation across
slots and nodes, sharded pub/sub. (Every test of test_cache.py that takes `redis_url` runs
on the cluster too.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from fastpost.cache import (
    INVALIDATION_CHANNEL,
    Cache,
    Entry,
    generation_key,
    lease_key,
    redis_key,
    tag_key,
)
from fastpost.redis_client import connect, parse_redis_url
from tests.helpers import RedisClusterNodes, redis_cluster, wait_until


def test_an_entrys_value_generation_and_lease_share_one_hash_slot() -> None:
    for key in ("fastpost:v2:post:42", "fastpost:v2:search:{odd}", "k}", "{"):
        slots = {key_slot(name.encode()) for name in (redis_key(key), generation_key(key))}
        assert slots == {key_slot(lease_key(key).encode())}
    # ...while different keys spread over the cluster.
    assert len({key_slot(redis_key(f"post:{i}").encode()) for i in range(100)}) > 90


@pytest.fixture
def nodes(redis_cluster_nodes: RedisClusterNodes) -> RedisClusterNodes:
    redis_cluster_nodes.flush()
    return redis_cluster_nodes


@pytest.fixture
async def two_workers(nodes: RedisClusterNodes) -> AsyncIterator[tuple[Cache, Cache]]:
    a, b = Cache(redis_url=nodes.url), Cache(redis_url=nodes.url)
    await a.start()
    await b.start()
    try:
        await wait_until(lambda: _subscribers(nodes) == 2)
        yield a, b
    finally:
        await a.close()
        await b.close()


def _owner(nodes: RedisClusterNodes, name: str) -> int:
    """The port of the master that holds `name`."""
    slot = key_slot(name.encode())
    with redis.Redis(port=nodes.ports[0]) as client:
        for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(port)
    raise AssertionError(f"slot {slot} is not served")


def _subscribers(nodes: RedisClusterNodes) -> int:
    """How many connections listen to the invalidation channel, on the node that holds it."""
    with redis.Redis(port=_owner(nodes, INVALIDATION_CHANNEL)) as client:
        ((_, count),) = client.pubsub_shardnumsub(INVALIDATION_CHANNEL)
    return int(count)


def _bus_messages_sent(nodes: RedisClusterNodes) -> dict[str, int]:
    """Pub/sub messages the nodes have sent each other over the cluster bus, by kind."""
    totals = {"publish": 0, "publishshard": 0}
    for port in nodes.ports:
        with redis.Redis(port=port) as client:
            info = client.cluster("INFO")
        for kind in totals:
            # A counter shows only once it is above 0.
            totals[kind] += int(info.get(f"cluster_stats_messages_{kind}_sent", 0))
    return totals


async def _entry(body: bytes) -> Entry:
    return Entry.of(body)


async def test_an_invalidation_by_tag_drops_keys_on_every_node(
    nodes: RedisClusterNodes, two_workers: tuple[Cache, Cache]
) -> None:
    writer, reader = two_workers
    tags = ["user:1", "user:2", "posts:first"]
    keys = [f"fastpost:v2:post:{i}" for i in range(30)]
    for i, key in enumerate(keys):
        await reader.get_or_load(key, lambda i=i: _entry(b"v%d" % i), ttl=60, tags=[tags[i % 3]])
    # The keys and the tags' sets spread over all three masters.
    assert {_owner(nodes, redis_key(key)) for key in keys} == set(nodes.ports)
    assert len({_owner(nodes, tag_key(tag)) for tag in tags}) > 1

    await writer.invalidate(tags=tags)

    raw = connect(parse_redis_url(nodes.url))
    try:
        for key in keys:
            assert await raw.mget(redis_key(key), generation_key(key)) == [None, b"1"]
        assert not any([await raw.exists(tag_key(tag)) for tag in tags])
    finally:
        await raw.aclose()
    await wait_until(lambda: len(reader.local) == 0, within=2)
    # And the next read loads afresh, for both workers.
    fresh, calls = b"new", []

    async def load() -> Entry:
        calls.append(1)
        return Entry.of(fresh)

    assert (await writer.get_or_load(keys[0], load, ttl=60)).body == fresh
    assert (await reader.get_or_load(keys[0], load, ttl=60)).body == fresh
    assert len(calls) == 1


async def test_invalidations_travel_by_sharded_pub_sub_without_crossing_the_cluster_bus(
    nodes: RedisClusterNodes, two_workers: tuple[Cache, Cache]
) -> None:
    # Why SPUBLISH: a classic PUBLISH on a cluster is copied over the bus to every other
    # node whether anyone listens there or not; a sharded message stays in its shard (here
    # one master without replicas: it crosses the bus not at all).
    writer, reader = two_workers
    before = _bus_messages_sent(nodes)
    with redis.Redis(port=nodes.ports[0]) as client:
        client.publish("classic", "x")
    await wait_until(lambda: _bus_messages_sent(nodes)["publish"] == before["publish"] + 2)

    before = _bus_messages_sent(nodes)
    for i in range(10):
        await reader.get_or_load(f"k{i}", lambda: _entry(b"v"), ttl=60)
        await writer.invalidate(keys=[f"k{i}"])
    await wait_until(lambda: len(reader.local) == 0, within=2)
    assert _bus_messages_sent(nodes) == before


def _move_slot(nodes: RedisClusterNodes, slot: int, from_port: int, to_port: int) -> None:
    """Hand an empty slot to another master, as `redis-cli --cluster reshard` would."""
    clients = {port: redis.Redis(port=port) for port in nodes.ports}
    try:
        ids = {port: client.execute_command("CLUSTER MYID") for port, client in clients.items()}
        assert clients[from_port].execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
        clients[to_port].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[from_port])
        clients[from_port].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to_port])
        for port in sorted(nodes.ports, key=lambda p: (p != to_port, p != from_port)):
            clients[port].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to_port])
    finally:
        for client in clients.values():
            client.close()


async def test_invalidations_reach_other_workers_after_the_channels_slot_moves(
    nodes: RedisClusterNodes, two_workers: tuple[Cache, Cache]
) -> None:
    writer, reader = two_workers
    owner = _owner(nodes, INVALIDATION_CHANNEL)
    new_owner = next(port for port in nodes.ports if port != owner)
    _move_slot(nodes, key_slot(INVALIDATION_CHANNEL.encode()), owner, new_owner)
    assert _owner(nodes, INVALIDATION_CHANNEL) == new_owner
    # The old owner let the subscriptions go; each listener subscribes on the new one.
    await wait_until(lambda: _subscribers(nodes) == 2, within=5)
    await reader.get_or_load("k", lambda: _entry(b"v"), ttl=60)
    await writer.invalidate(keys=["k"])
    await wait_until(lambda: reader.peek("k") is None, within=2)


async def test_a_burst_across_workers_on_the_cluster_loads_once_per_key(
    nodes: RedisClusterNodes,
) -> None:
    caches = [Cache(redis_url=nodes.url) for _ in range(3)]
    for cache in caches:
        await cache.start()
    calls: list[str] = []

    async def load(key: str) -> Entry:
        calls.append(key)
        await asyncio.sleep(0.05)
        return Entry.of(key.encode())

    try:
        keys = [f"post:{i}" for i in range(6)]  # on every master
        results = await asyncio.gather(
            *(
                cache.get_or_load(key, lambda key=key: load(key), ttl=60)
                for cache in caches
                for key in keys
                for _ in range(5)
            )
        )
        assert sorted(calls) == sorted(keys)
        assert {r.body for r in results} == {k.encode() for k in keys}
    finally:
        for cache in caches:
            await cache.close()


async def test_a_master_going_away_never_fails_a_call(tmp_path: Path) -> None:
    # A cluster of the test's own: this one loses a master (no replica takes over).
    with redis_cluster(tmp_path) as nodes:
        cache = Cache(redis_url=nodes.url, error_log_interval=60)
        await cache.start()
        calls: list[str] = []

        async def load() -> Entry:
            calls.append("load")
            return Entry.of(b"v")

        try:
            keys = [f"post:{i}" for i in range(6)]
            for key in keys:
                await cache.get_or_load(key, load, ttl=60, tags=["user:1"])
            nodes.processes[0].kill()
            nodes.processes[0].wait()
            cache.local.clear()
            # Nor holds it for long: with redis-py's default retries each call on the lost
            # master took 4-6 s (a bound far above the milliseconds they take now).
            async with asyncio.timeout(10):
                for key in keys:
                    cache._redis_down_until = 0  # try Redis every call, the worst case
                    assert (await cache.get_or_load(key, load, ttl=60)).body == b"v"
                    cache._redis_down_until = 0
                    await cache.invalidate(keys=[key], tags=["user:1"])
            assert cache.stats[("redis", "error")] > 0
        finally:
            await cache.close()
