"""The two-tier cache: in-process (tier 1) in front of Redis (tier 2).

Services call it by name: `await cache.get_or_load(key, loader, ttl=..., tags=...)` returns
an `Entry` whose `body` is the serialised response, ready to be sent as the HTTP body, and
`await cache.invalidate(keys=..., tags=...)` after a write.

How it stays correct across worker processes:
- Keys are built by `cache_key()` from a namespace, the schema version and the arguments,
  never with `hash()` (which is salted per process): every worker names an entry the same.
- Tier 1 is a bounded LRU (entries and bytes) whose TTL is short (`local_ttl`, 5 s by
  default) whatever the entry's own TTL. Invalidations reach the other workers over Redis
  pub/sub, which is fire-and-forget: a worker that misses a message still drops the entry
  within `local_ttl`. That bound is the documented staleness window for other workers; the
  worker that made the write never serves the old value. When the subscription is lost and
  comes back, tier 1 is cleared whole, since messages may have been missed meanwhile.
- Tier 2 entries are written only if no invalidation happened since the loader started:
  each key has a generation counter, bumped by every invalidation, and the write is a Lua
  script that checks it. So a slow loader that read the database before a write cannot put
  the old value back after the write's invalidation.
- Single flight: concurrent misses for one key in a process share one load (a future per
  key); across processes, a short Redis lease (`SET NX PX`) lets one process load while the
  others poll tier 2 for its result, and load themselves only if the lease goes away
  without a value (its holder failed or died).
- Redis failures never fail a request: every Redis call is guarded, the cache then behaves
  as tier 1 alone, errors are logged at most once per `error_log_interval`, and calls skip
  Redis for a short back-off before trying again (redis-py reconnects by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from fastpost.replicas import carries_position, primary_reads
from fastpost.settings import Settings

log = logging.getLogger("fastpost.cache")

# Bump when the shape of any cached body changes: old entries then simply stop matching.
SCHEMA_VERSION = 2  # 2: posts carry their tags
PREFIX = "fastpost"
INVALIDATION_CHANNEL = f"{PREFIX}:invalidate"
# However slow the lease holder, a waiting process loads by itself after this long.
MAX_WAIT_SECONDS = 10.0

# Set the value only if the key's generation is still the one seen before loading.
_SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[2]) or '0'
if current == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  for i = 4, #ARGV do
    redis.call('SADD', ARGV[i], KEYS[1])
    redis.call('PEXPIRE', ARGV[i], ARGV[3])
  end
  return 1
end
return 0
"""

# Invalidate in one round trip. ARGV: the channel, the number n of keys, n keys, then the
# Redis keys of tags. Drops each key and every key stored under a tag, bumps their
# generations (see _SET_IF_GENERATION), drops the tags, tells the other workers; returns
# the keys dropped.
_INVALIDATE = """
local keys, seen = {}, {}
local n = tonumber(ARGV[2])
for i = 3, n + 2 do
  if not seen[ARGV[i]] then seen[ARGV[i]] = true; keys[#keys + 1] = ARGV[i] end
end
for i = n + 3, #ARGV do
  for _, key in ipairs(redis.call('SMEMBERS', ARGV[i])) do
    if not seen[key] then seen[key] = true; keys[#keys + 1] = key end
  end
  redis.call('DEL', ARGV[i])
end
for _, key in ipairs(keys) do
  redis.call('DEL', key)
  redis.call('INCR', key .. ':gen')
  redis.call('EXPIRE', key .. ':gen', 86400)
end
if #keys > 0 then
  redis.call('PUBLISH', ARGV[1], table.concat(keys, '\\n'))
end
return keys
"""


def cache_key(namespace: str, *parts: str | int) -> str:
    """A key every process computes the same: prefix, schema version, namespace, arguments."""
    return ":".join((PREFIX, f"v{SCHEMA_VERSION}", namespace, *map(str, parts)))


def tag_key(tag: str) -> str:
    return f"{PREFIX}:tag:{tag}"


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached response body with what HTTP caching needs to know about it."""

    body: bytes
    etag: str
    last_modified: str | None = None  # an HTTP date, where it has a meaning
    # Tags the loader found while loading (the authors a page shows, say); not stored in
    # Redis as part of the value.
    tags: tuple[str, ...] = ()
    # What readers derive from the body, once per entry a process holds (a page split into
    # per-item fragments for logged-in callers: see fastpost.fragments). It lives and dies
    # with the entry, so whatever drops the entry drops it too; never stored in Redis.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        body: bytes,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        tags: Iterable[str] = (),
    ) -> Entry:
        return cls(body, etag or body_etag(body), last_modified, tuple(tags))

    def to_bytes(self) -> bytes:
        # One Redis value: "etag\nlast-modified\nbody".
        return b"\n".join((self.etag.encode(), (self.last_modified or "").encode(), self.body))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry:
        etag, last_modified, body = raw.split(b"\n", 2)
        return cls(body, etag.decode(), last_modified.decode() or None)


def body_etag(body: bytes) -> str:
    """A strong validator from the bytes themselves, computed once when they are cached."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


Loader = Callable[[], Awaitable[Entry]]
EventHook = Callable[[str, str, str], None]  # (cache name, tier, event)


class _LocalTier:
    """A bounded LRU of entries with per-entry expiry, plus a tag index."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[Entry, float, tuple[str, ...]]] = OrderedDict()
        self._tags: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        item = self._entries.get(key)
        if item is None:
            return None
        entry, expires, _ = item
        if expires < time.monotonic():
            self.drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry, ttl: float, tags: tuple[str, ...]) -> None:
        size = len(entry.body)
        if size > self.max_bytes:
            return
        self.drop(key)
        self._entries[key] = (entry, time.monotonic() + ttl, tags)
        self.bytes += size
        for tag in tags:
            self._tags.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self.drop(next(iter(self._entries)))

    def drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is None:
            return
        entry, _, tags = item
        self.bytes -= len(entry.body)
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._tags[tag]

    def keys_tagged(self, tag: str) -> set[str]:
        return set(self._tags.get(tag, ()))

    def clear(self) -> None:
        self._entries.clear()
        self._tags.clear()
        self.bytes = 0


class Cache:
    """Tier 1 in process, tier 2 in Redis when `redis_url` is given."""

    def __init__(
        self,
        *,
        name: str = "http",
        enabled: bool = True,
        redis_url: str | None = None,
        local_ttl: float = 5.0,
        local_max_entries: int = 10_000,
        local_max_bytes: int = 64 * 1024 * 1024,
        lease_ms: int = 2000,
        redis_timeout: float = 0.25,
        error_log_interval: float = 30.0,
        on_event: EventHook | None = None,
    ) -> None:
        self.name = name
        self.enabled = enabled
        self.local = _LocalTier(local_max_entries, local_max_bytes)
        self.local_ttl = local_ttl
        self.lease_ms = lease_ms
        self.error_log_interval = error_log_interval
        self._on_event = on_event
        self._inflight: dict[str, asyncio.Future[Entry]] = {}
        # Keys invalidated while their load was in flight: the result must not be kept.
        self._stale_loads: set[str] = set()
        self._redis: Any = None
        self._redis_url = redis_url
        self._redis_timeout = redis_timeout
        self._redis_down_until = 0.0
        self._last_error_log = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._set_script: Any = None
        self._invalidate_script: Any = None
        self.stats: dict[tuple[str, str], int] = {}

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled or self._redis_url is None or self._redis is not None:
            return
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(
            self._redis_url,
            socket_timeout=self._redis_timeout,
            socket_connect_timeout=self._redis_timeout,
            health_check_interval=10,
        )
        self._set_script = self._redis.register_script(_SET_IF_GENERATION)
        self._invalidate_script = self._redis.register_script(_INVALIDATE)
        self._listener = asyncio.create_task(self._listen(), name="cache-invalidation-listener")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- reading -----------------------------------------------------------------------

    def _count(self, tier: str, event: str) -> None:
        self.stats[(tier, event)] = self.stats.get((tier, event), 0) + 1
        if self._on_event is not None:
            self._on_event(self.name, tier, event)

    def peek(self, key: str) -> Entry | None:
        """Tier 1 only, no I/O: for the hot path that answers before routing."""
        if not self.enabled:
            return None
        entry = self.local.get(key)
        # A miss is not counted here: the caller falls back to get_or_load, which counts it.
        if entry is not None:
            self._count("local", "hit")
        return entry

    async def get_or_load(
        self, key: str, loader: Loader, *, ttl: float, tags: Iterable[str] = ()
    ) -> Entry:
        """Return the entry for `key`, loading it at most once at a time per process."""
        if not self.enabled:
            return await self._load(loader)
        tags = tuple(tags)
        # A client that wrote moments ago (it carries a WAL position: fastpost.replicas) may
        # reach a worker whose tier 1 has not had that write's invalidation yet; tier 2 was
        # invalidated before the write was answered, so such a client reads from there.
        entry = None if carries_position() else self.local.get(key)
        if entry is not None:
            self._count("local", "hit")
            return entry
        self._count("local", "miss")
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        future: asyncio.Future[Entry] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            entry = await self._load_through_redis(key, loader, ttl, tags)
            tags = (*tags, *entry.tags)
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody else may be waiting; mark the exception retrieved either way.
            future.exception()
            raise
        else:
            future.set_result(entry)
            if key not in self._stale_loads:
                self.local.put(key, entry, self._local_ttl(ttl), tuple(tags))
            return entry
        finally:
            del self._inflight[key]
            self._stale_loads.discard(key)

    def _local_ttl(self, ttl: float) -> float:
        # Jitter spreads the expiry of entries cached together, so they don't all miss at once.
        return min(ttl, self.local_ttl) * random.uniform(0.9, 1.0)

    async def _load_through_redis(
        self, key: str, loader: Loader, ttl: float, tags: tuple[str, ...]
    ) -> Entry:
        if not self._redis_usable():
            return await self._load(loader)
        try:
            raw, generation = await self._redis.mget(key, f"{key}:gen")
        except Exception as exc:
            self._redis_failed(exc)
            return await self._load(loader)
        if raw is not None:
            self._count("redis", "hit")
            return Entry.from_bytes(raw)
        self._count("redis", "miss")
        generation = generation or b"0"
        lease = f"{key}:lease"
        token = uuid.uuid4().hex
        try:
            leased = await self._redis.set(lease, token, nx=True, px=self.lease_ms)
            if not leased:
                waited = await self._wait_for_other_process(key, lease, generation)
                if waited is not None:
                    return waited
        except Exception as exc:
            self._redis_failed(exc)
            return await self._load(loader)
        try:
            entry = await self._load(loader)
        except BaseException:
            if leased:
                # Waiters see the lease gone without a value, and load by themselves.
                with contextlib.suppress(Exception):
                    await self._release_lease(lease, token)
            raise
        ttl_ms = max(1, int(ttl * random.uniform(0.9, 1.1) * 1000))
        all_tags = {*tags, *entry.tags}
        try:
            await self._set_script(
                keys=[key, f"{key}:gen"],
                args=[entry.to_bytes(), generation, ttl_ms, *map(tag_key, sorted(all_tags))],
            )
            if leased:
                await self._release_lease(lease, token)
        except Exception as exc:
            self._redis_failed(exc)
        return entry

    async def _wait_for_other_process(
        self, key: str, lease: str, generation: bytes
    ) -> Entry | None:
        """Poll tier 2 while another process holds the lease. None when the lease is gone
        without a value (its holder failed, or died and the lease expired), or when the key
        was invalidated meanwhile: load then.

        The holder's value cannot be written after an invalidation (the generation check),
        so waiting on would be waiting for a value that never comes: under a steady stream
        of writes to one list (the course's mixed workload invalidates the first page with
        every new post) waiters went from one holder to the next, and the list's p99 under
        `fastpost bench --scenario mixed` was hundreds of milliseconds."""
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        delay = 0.002
        gen_key = f"{key}:gen"
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
            raw, held, now = await self._redis.mget(key, lease, gen_key)
            if raw is not None:
                self._count("redis", "hit")
                return Entry.from_bytes(raw)
            if held is None or (now or b"0") != generation:
                return None
        return None

    async def _release_lease(self, lease: str, token: str) -> None:
        # Only our own lease: it may have expired and been taken by another process.
        if await self._redis.get(lease) == token.encode():
            await self._redis.delete(lease)

    async def _load(self, loader: Loader) -> Entry:
        self._count("origin", "load")
        # From the primary: an entry outlives the request that fills it, and a fill from a
        # replica that has not yet replayed the write whose invalidation just dropped the
        # entry would put the old value back for every caller (fastpost.replicas).
        with primary_reads():
            return await loader()

    # -- invalidation ------------------------------------------------------------------

    async def invalidate(self, keys: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        """Drop keys, and every key stored under one of the tags, from both tiers and from
        every worker's tier 1."""
        if not self.enabled:
            return
        keys = set(keys)
        tags = tuple(tags)
        for tag in tags:
            keys |= self.local.keys_tagged(tag)
        self._drop_locally(keys)
        if not self._redis_usable() or not (keys or tags):
            return
        try:
            # One round trip, whatever the number of keys and tags (tests/cache/
            # test_invalidation_round_trips.py counts the commands Redis receives).
            dropped = await self._invalidate_script(
                args=[INVALIDATION_CHANNEL, len(keys), *keys, *map(tag_key, tags)]
            )
        except Exception as exc:
            self._redis_failed(exc)
            return
        # Keys only Redis knew under a tag: this worker must not serve them either.
        self._drop_locally({key.decode() for key in dropped} - keys)

    def _drop_locally(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.local.drop(key)
            if key in self._inflight:
                self._stale_loads.add(key)
            self._count("local", "invalidation")

    async def _listen(self) -> None:
        """Apply other workers' invalidations to tier 1; resubscribe after failures."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(INVALIDATION_CHANNEL)
                    # Messages may have been missed while not subscribed.
                    self.local.clear()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._drop_locally(message["data"].decode().split("\n"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._redis_failed(exc)
                await asyncio.sleep(0.5)

    # -- Redis health ------------------------------------------------------------------

    def _redis_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    def _redis_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        # Skip Redis for a moment rather than paying a timeout on every request.
        self._redis_down_until = now + 1.0
        # Kept here, not reported as a cache event: the metrics count hits, misses, loads
        # and invalidations; Redis errors show in the log (once per interval).
        self.stats[("redis", "error")] = self.stats.get(("redis", "error"), 0) + 1
        if now - self._last_error_log >= self.error_log_interval:
            self._last_error_log = now
            log.warning("redis unavailable, serving from tier 1 and the database: %r", exc)


def build_cache(settings: Settings, on_event: EventHook | None = None) -> Cache:
    """The application's response cache, from configuration; `on_event` counts its hits,
    misses, loads and invalidations (fastpost.metrics.cache_event)."""
    return Cache(
        on_event=on_event,
        enabled=settings.cache.enabled,
        redis_url=settings.redis_url,
        local_ttl=settings.cache.local_ttl_seconds,
        local_max_entries=settings.cache.local_max_entries,
        local_max_bytes=settings.cache.local_max_bytes,
    )


async def _cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


CacheDep = Annotated[Cache, Depends(_cache)]
