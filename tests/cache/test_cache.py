"""The two-tier cache on its own: keys, bounds, single flight, invalidation, Redis failures."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from fastpost.cache import SCHEMA_VERSION, Cache, Entry, cache_key, redis_key, tag_key
from fastpost.redis_client import connect, parse_redis_url
from tests.cache.conftest import PrivateRedis


def counting_loader(body: bytes = b'{"v":1}', delay: float = 0.0):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    async def load() -> Entry:
        calls["n"] += 1
        await asyncio.sleep(delay)
        return Entry.of(body)

    return load, calls


def test_keys_are_the_same_in_every_process() -> None:
    # Python's hash() of a str differs between processes; our keys must not.
    code = "from fastpost.cache import cache_key; print(cache_key('post', 42, 'x'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert outputs == {cache_key("post", 42, "x")}
    assert cache_key("post", 42, "x") == f"fastpost:v{SCHEMA_VERSION}:post:42:x"


def test_an_entry_round_trips_through_its_redis_form() -> None:
    entry = Entry.of(b'{"a":\n1}', last_modified="Fri, 27 Nov 2026 10:00:00 GMT")
    assert Entry.from_bytes(entry.to_bytes()) == entry
    assert entry.etag.startswith('"')


async def test_a_hit_skips_the_loader() -> None:
    cache = Cache()
    load, calls = counting_loader()
    first = await cache.get_or_load("k", load, ttl=60)
    second = await cache.get_or_load("k", load, ttl=60)
    assert first == second
    assert calls["n"] == 1
    assert cache.stats[("local", "hit")] == 1


async def test_tier_one_is_bounded_by_entries_and_bytes() -> None:
    cache = Cache(local_max_entries=3, local_max_bytes=1000)
    for i in range(5):
        load, _ = counting_loader(bytes(100))
        await cache.get_or_load(f"k{i}", load, ttl=60)
    assert len(cache.local) == 3
    assert cache.peek("k0") is None  # least recently used went first
    big, _ = counting_loader(bytes(600))
    await cache.get_or_load("big", big, ttl=60)
    assert cache.local.bytes <= 1000


async def test_entries_expire_after_their_ttl_with_jitter() -> None:
    cache = Cache(local_ttl=0.05)
    load, calls = counting_loader()
    await cache.get_or_load("k", load, ttl=60)
    await asyncio.sleep(0.06)
    await cache.get_or_load("k", load, ttl=60)
    assert calls["n"] == 2


async def test_a_burst_of_misses_runs_the_loader_once() -> None:
    cache = Cache()
    load, calls = counting_loader(delay=0.05)
    results = await asyncio.gather(*(cache.get_or_load("k", load, ttl=60) for _ in range(100)))
    assert calls["n"] == 1
    assert len({r.body for r in results}) == 1


async def test_a_failed_load_is_not_cached_and_reaches_every_waiter() -> None:
    cache = Cache()

    async def fail() -> Entry:
        await asyncio.sleep(0.01)
        raise LookupError("gone")

    results = await asyncio.gather(
        *(cache.get_or_load("k", fail, ttl=60) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)
    assert cache.peek("k") is None


async def test_invalidation_by_key_and_by_tag() -> None:
    cache = Cache()
    load, _calls = counting_loader()
    await cache.get_or_load("a", load, ttl=60, tags=["user:1"])
    await cache.get_or_load("b", load, ttl=60)
    await cache.invalidate(tags=["user:1"])
    await cache.invalidate(keys=["b"])
    assert cache.peek("a") is None
    assert cache.peek("b") is None


async def test_an_invalidation_during_a_load_keeps_the_stale_result_out() -> None:
    cache = Cache()
    load, _ = counting_loader(delay=0.05)
    task = asyncio.create_task(cache.get_or_load("k", load, ttl=60))
    await asyncio.sleep(0.01)
    await cache.invalidate(keys=["k"])  # the write committed while the old value loaded
    await task
    assert cache.peek("k") is None


async def test_a_disabled_cache_always_loads() -> None:
    cache = Cache(enabled=False)
    load, calls = counting_loader()
    await cache.get_or_load("k", load, ttl=60)
    await cache.get_or_load("k", load, ttl=60)
    assert calls["n"] == 2


# -- with Redis ----------------------------------------------------------------------------


async def test_workers_share_tier_two(redis_url: str) -> None:
    a, b = Cache(redis_url=redis_url), Cache(redis_url=redis_url)
    await a.start()
    await b.start()
    try:
        load, calls = counting_loader()
        await a.get_or_load("k", load, ttl=60)
        entry = await b.get_or_load("k", load, ttl=60)
        assert calls["n"] == 1
        assert entry.body == b'{"v":1}'
        assert b.stats[("redis", "hit")] == 1
    finally:
        await a.close()
        await b.close()


async def test_an_invalidation_reaches_the_other_workers_tier_one(redis_url: str) -> None:
    a, b = Cache(redis_url=redis_url), Cache(redis_url=redis_url)
    await a.start()
    await b.start()
    try:
        await asyncio.sleep(0.1)  # both subscribed
        load, _ = counting_loader()
        await a.get_or_load("k", load, ttl=60, tags=["user:7"])
        await b.get_or_load("k", load, ttl=60)
        assert b.peek("k") is not None
        await a.invalidate(tags=["user:7"])
        for _ in range(50):
            if b.peek("k") is None:
                break
            await asyncio.sleep(0.01)
        assert b.peek("k") is None
        newer, _ = counting_loader(b'{"v":2}')
        assert (await b.get_or_load("k", newer, ttl=60)).body == b'{"v":2}'
    finally:
        await a.close()
        await b.close()


async def test_a_burst_across_workers_loads_once(redis_url: str) -> None:
    caches = [Cache(redis_url=redis_url) for _ in range(4)]
    for cache in caches:
        await cache.start()
    try:
        load, calls = counting_loader(delay=0.1)
        results = await asyncio.gather(
            *(cache.get_or_load("k", load, ttl=60) for cache in caches for _ in range(25))
        )
        assert calls["n"] == 1
        assert {r.body for r in results} == {b'{"v":1}'}
    finally:
        for cache in caches:
            await cache.close()


async def test_a_worker_waiting_on_another_workers_load_stops_waiting_when_the_key_is_invalidated(
    redis_url: str,
) -> None:
    holder, waiter = Cache(redis_url=redis_url), Cache(redis_url=redis_url)
    await holder.start()
    await waiter.start()
    release = asyncio.Event()

    async def held_load() -> Entry:
        await release.wait()
        return Entry.of(b'{"old":1}')

    try:
        holding = asyncio.create_task(holder.get_or_load("k", held_load, ttl=60))
        await asyncio.sleep(0.05)  # `holder` has the lease and is reading the old row
        fresh, calls = counting_loader(b'{"new":1}')
        waiting = asyncio.create_task(waiter.get_or_load("k", fresh, ttl=60))
        await asyncio.sleep(0.05)
        assert calls["n"] == 0  # it waits for the holder's value...
        await holder.invalidate(keys=["k"])  # ...which a write has just made stale
        # The holder's value can no longer be written back: the waiter loads by itself.
        assert (await asyncio.wait_for(waiting, 1)).body == b'{"new":1}'
        assert calls["n"] == 1
        release.set()
        await holding
    finally:
        release.set()
        await holder.close()
        await waiter.close()


async def test_a_load_that_raced_an_invalidation_is_not_written_to_redis(
    redis_url: str,
) -> None:
    a, b = Cache(redis_url=redis_url), Cache(redis_url=redis_url)
    await a.start()
    await b.start()
    try:
        slow, _ = counting_loader(b'{"old":1}', delay=0.1)
        task = asyncio.create_task(a.get_or_load("k", slow, ttl=60))
        await asyncio.sleep(0.03)
        await b.invalidate(keys=["k"])  # a write committed while `a` read the old row
        await task
        fresh, calls = counting_loader(b'{"new":1}')
        assert (await b.get_or_load("k", fresh, ttl=60)).body == b'{"new":1}'
        assert calls["n"] == 1
    finally:
        await a.close()
        await b.close()


async def test_redis_going_away_never_fails_a_call_and_is_logged_once(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(redis_url=private_redis.url, error_log_interval=60)
    await cache.start()
    try:
        load, calls = counting_loader()
        await cache.get_or_load("k", load, ttl=60)
        private_redis.stop()
        cache.local.clear()
        with caplog.at_level(logging.WARNING, logger="fastpost.cache"):
            for i in range(20):
                await cache.get_or_load(f"k{i}", load, ttl=60)
                await cache.invalidate(keys=[f"k{i}"])
                cache._redis_down_until = 0  # retry Redis every call, the worst case
        assert calls["n"] == 21
        warnings = [r for r in caplog.records if r.name == "fastpost.cache"]
        assert len(warnings) == 1

        private_redis.start()  # same port: the client reconnects by itself
        cache._redis_down_until = 0
        other = Cache(redis_url=private_redis.url)
        await other.start()
        try:
            await cache.get_or_load("after", load, ttl=60)
            shared, shared_calls = counting_loader()
            assert (await other.get_or_load("after", shared, ttl=60)).body == b'{"v":1}'
            assert shared_calls["n"] == 0  # served from Redis again
        finally:
            await other.close()
    finally:
        await cache.close()


async def test_every_event_reaches_the_metrics_hook_by_cache_and_tier(redis_url: str) -> None:
    events: list[tuple[str, str, str]] = []
    cache = Cache(name="http", redis_url=redis_url, on_event=lambda *e: events.append(e))
    await cache.start()
    try:
        load, _ = counting_loader()
        await cache.get_or_load("k", load, ttl=60)
        await cache.get_or_load("k", load, ttl=60)
        await cache.invalidate(keys=["k"])
    finally:
        await cache.close()
    assert ("http", "local", "miss") in events
    assert ("http", "redis", "miss") in events
    assert ("http", "origin", "load") in events
    assert ("http", "local", "hit") in events
    assert ("http", "local", "invalidation") in events


async def test_a_tag_outlives_the_longest_lived_entry_filed_under_it(redis_url: str) -> None:
    # Were the tag's set to expire with a shorter-lived entry, an invalidation by the tag
    # (a profile edit, say) would miss the longer-lived entries still in Redis.
    writer, reader = Cache(redis_url=redis_url), Cache(redis_url=redis_url)
    await writer.start()
    await reader.start()
    raw = connect(parse_redis_url(redis_url))
    try:
        long_lived, _ = counting_loader(b'{"profile":1}')
        short_lived, _ = counting_loader(b'{"list":1}')
        await reader.get_or_load("profile", long_lived, ttl=300, tags=["user:7"])
        await reader.get_or_load("list", short_lived, ttl=1, tags=["user:7"])
        assert await raw.pttl(tag_key("user:7")) > 200_000
        await writer.invalidate(tags=["user:7"])
        assert await raw.get(redis_key("profile")) is None
    finally:
        await raw.aclose()
        await writer.close()
        await reader.close()


async def test_an_invalidation_by_tag_during_a_load_keeps_the_stale_result_out() -> None:
    # A first page being read when a new post's write drops the tag of first pages: the
    # page read before the write must not be kept.
    cache = Cache()
    slow, _ = counting_loader(b'{"old":1}', delay=0.05)
    task = asyncio.create_task(cache.get_or_load("k", slow, ttl=60, tags=["posts:first"]))
    await asyncio.sleep(0.01)
    await cache.invalidate(tags=["posts:first"])
    await task
    assert cache.peek("k") is None


async def test_a_load_that_raced_an_invalidation_by_tag_is_not_written_to_redis(
    redis_url: str,
) -> None:
    a, b = Cache(redis_url=redis_url), Cache(redis_url=redis_url)
    await a.start()
    await b.start()
    try:
        slow, _ = counting_loader(b'{"old":1}', delay=0.1)
        task = asyncio.create_task(a.get_or_load("k", slow, ttl=60, tags=["posts:first"]))
        await asyncio.sleep(0.03)
        await b.invalidate(tags=["posts:first"])  # a new post committed while `a` read
        await task
        fresh, calls = counting_loader(b'{"new":1}')
        assert (await b.get_or_load("k", fresh, ttl=60)).body == b'{"new":1}'
        assert calls["n"] == 1
    finally:
        await a.close()
        await b.close()
