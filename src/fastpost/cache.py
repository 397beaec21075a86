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
  the old value back after the write's invalidation. That holds for an invalidation by tag
  too: a key is filed under the tags its caller names before the load runs (with the lease),
  so the invalidation finds it. (Tags the loader itself finds, the authors a page shows, are
  filed after: an invalidation by one of those during the load is missed in Redis, and the
  entry lives out its TTL.)
- Single flight: concurrent misses for one key in a process share one load (a future per
  key); across processes, a short Redis lease (`SET NX PX`) lets one process load while the
  others poll tier 2 for its result, and load themselves only if the lease goes away
  without a value (its holder failed or died).
- Redis failures never fail a request: every Redis call is guarded, the cache then behaves
  as tier 1 alone, errors are logged at most once per `error_log_interval`, and calls skip
  Redis for a short back-off before trying again (redis-py reconnects by itself).

On a Redis Cluster (`redis+cluster://`, fastpost.redis_client) every script and MGET names
the keys it touches, all in one hash slot: an entry's value, generation and lease share the
hash tag `{<key>}` (`redis_key()`); a tag's set lives in a slot of its own. So what one
script does on a single server (the store with its tags, the invalidation) takes a couple
of steps there, each a batch per node sent to every node at once, ordered so that no
interleaving leaves a stale value (see `_store` and `_invalidate_on_cluster`). Invalidations
travel by sharded pub/sub (SPUBLISH/SSUBSCRIBE), which Redis 7 confines to the channel's
shard, instead of classic pub/sub, which the cluster copies to every node.
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
from redis.exceptions import MovedError

from fastpost.closing import stop_task
from fastpost.redis_client import RedisLocation, connect, connect_node, parse_redis_url
from fastpost.replicas import carries_position, primary_reads
from fastpost.settings import Settings

log = logging.getLogger("fastpost.cache")

# Bump when the shape of any cached body changes: old entries then simply stop matching.
SCHEMA_VERSION = 2  # 2: posts carry their tags
PREFIX = "fastpost"
INVALIDATION_CHANNEL = f"{PREFIX}:invalidate"
# However slow the lease holder, a waiting process loads by itself after this long.
MAX_WAIT_SECONDS = 10.0
# How long a key's generation outlives its last invalidation: longer than any entry's TTL,
# so that a load started before the invalidation still finds the generation moved on.
GENERATION_TTL_SECONDS = 86_400
# SPOP's count for "the whole set": a count at least the set's size returns every member
# and deletes the set, in one command.
_WHOLE_SET = 2**31 - 1

# Set the value only if the key's generation is still the one seen before loading.
# KEYS: the value, its generation, then (on a single server only: see _store) the tag sets
# the entry's key joins. ARGV: the value, the generation seen, the TTL in ms, the key.
_SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[2]) or '0'
if current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[4])
  -- A tag set lives as long as the longest-lived entry under it: were it to expire first,
  -- an invalidation by that tag would miss the entries still in Redis.
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[3])
  end
end
return 1
"""

# Take the lease on loading a key, filing the key first under the tags known before loading
# (see Cache._lease): one round trip, as the bare SET NX it replaces when there are tags; on
# a single server only (on a cluster the tag sets live in other slots). KEYS: the lease, then
# the tag sets. ARGV: the token, the lease's ms, the key, the entry's TTL in ms.
_LEASE_AND_FILE = """
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[3])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
  end
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
"""

# Invalidate in one round trip, on a single server (on a cluster the keys it derives live in
# other hash slots: see Cache._invalidate_on_cluster). KEYS: the tag sets. ARGV: the
# channel, the generations' lifetime, then the keys. Drops each key and every key stored
# under a tag, bumps their generations (see _SET_IF_GENERATION), drops the tags, tells the
# other workers; returns the keys dropped. Redis names are derived as redis_key() and
# generation_key() derive them.
_INVALIDATE = """
local keys, seen = {}, {}
for i = 3, #ARGV do
  if not seen[ARGV[i]] then seen[ARGV[i]] = true; keys[#keys + 1] = ARGV[i] end
end
for i = 1, #KEYS do
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not seen[key] then seen[key] = true; keys[#keys + 1] = key end
  end
  redis.call('DEL', KEYS[i])
end
for _, key in ipairs(keys) do
  local value = '{' .. key .. '}'
  redis.call('DEL', value)
  redis.call('INCR', value .. ':gen')
  redis.call('EXPIRE', value .. ':gen', ARGV[2])
end
if #keys > 0 then
  redis.call('PUBLISH', ARGV[1], table.concat(keys, '\\n'))
end
return keys
"""


_KEY_HEAD = f"{PREFIX}:v{SCHEMA_VERSION}:"


def cache_key(namespace: str, *parts: str | int) -> str:
    """A key every process computes the same: prefix, schema version, namespace, arguments."""
    if not parts:
        return _KEY_HEAD + namespace
    return _KEY_HEAD + namespace + ":" + ":".join(map(str, parts))


def redis_key(key: str) -> str:
    """Where `key`'s value lives in Redis. The braces make the whole key a hash tag: on a
    Redis Cluster the value, its generation and its lease (below) then share one hash slot,
    as the script and the MGETs that use them together require. (Should `key` hold a `}`,
    the tag ends there, the same for all three names; it must not start with one, which
    would make the tag empty, and so no tag: `cache_key()`'s never do.)"""
    return "{" + key + "}"


def generation_key(key: str) -> str:
    return redis_key(key) + ":gen"


def lease_key(key: str) -> str:
    return redis_key(key) + ":lease"


def tag_key(tag: str) -> str:
    """The set of the keys stored under `tag`; in a slot of its own on a cluster."""
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
        # The tags of each load in flight, known before it ran: see invalidate().
        self._inflight_tags: dict[str, tuple[str, ...]] = {}
        # Keys invalidated while their load was in flight: the result must not be kept.
        self._stale_loads: set[str] = set()
        self._redis: Any = None
        self._redis_url = redis_url
        self._location: RedisLocation | None = None
        self._redis_timeout = redis_timeout
        self._redis_down_until = 0.0
        self._last_error_log = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._set_script: Any = None
        self._lease_script: Any = None
        self._invalidate_script: Any = None
        self.stats: dict[tuple[str, str], int] = {}

    # -- life cycle --------------------------------------------------------------------

    @property
    def on_cluster(self) -> bool:
        """Whether tier 2 is a Redis Cluster (`redis+cluster://`: fastpost.redis_client)."""
        return self._location is not None and self._location.cluster

    async def start(self) -> None:
        if not self.enabled or self._redis_url is None or self._redis is not None:
            return
        self._location = parse_redis_url(self._redis_url)
        self._redis = connect(self._location, **self._connection_options())
        self._set_script = self._redis.register_script(_SET_IF_GENERATION)
        if self.on_cluster:
            try:
                # Learn the cluster's slots now rather than in the first request.
                await self._redis.initialize()
            except Exception as exc:
                self._redis_failed(exc)
            listen = self._listen_on_cluster()
        else:
            self._lease_script = self._redis.register_script(_LEASE_AND_FILE)
            self._invalidate_script = self._redis.register_script(_INVALIDATE)
            listen = self._listen()
        self._listener = asyncio.create_task(listen, name="cache-invalidation-listener")

    def _connection_options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self._redis_timeout,
            "socket_connect_timeout": self._redis_timeout,
            "health_check_interval": 10,
        }

    async def close(self) -> None:
        if self._listener is not None:
            await stop_task(self._listener)
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
        if tags:
            self._inflight_tags[key] = tags
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
            self._inflight_tags.pop(key, None)
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
            raw, generation = await self._redis.mget(redis_key(key), generation_key(key))
        except Exception as exc:
            self._redis_failed(exc)
            return await self._load(loader)
        if raw is not None:
            self._count("redis", "hit")
            return Entry.from_bytes(raw)
        self._count("redis", "miss")
        generation = generation or b"0"
        lease = lease_key(key)
        token = uuid.uuid4().hex
        ttl_ms = max(1, int(ttl * random.uniform(0.9, 1.1) * 1000))
        try:
            leased = await self._lease(key, token, ttl_ms, tags)
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
        try:
            # The tags found while loading; those known before were filed with the lease.
            await self._store(key, entry, generation, ttl_ms, sorted(set(entry.tags) - {*tags}))
            if leased:
                await self._release_lease(lease, token)
        except Exception as exc:
            self._redis_failed(exc)
        return entry

    async def _lease(self, key: str, token: str, ttl_ms: int, tags: tuple[str, ...]) -> bool:
        """Take the lease on loading `key` (False: another process holds it), and file the
        key under the tags known before loading. Filed before the load reads anything: an
        invalidation by one of those tags while it runs (a new post dropping the first
        pages) then finds the key and bumps its generation, and the load's result, read
        before that write, is not stored. Found only after the load, the key would be in no
        tag's set yet, and the stale result would stay in Redis for its whole TTL."""
        lease = lease_key(key)
        if not tags:
            return bool(await self._redis.set(lease, token, nx=True, px=self.lease_ms))
        if not self.on_cluster:
            return bool(
                await self._lease_script(
                    keys=[lease, *map(tag_key, tags)], args=[token, self.lease_ms, key, ttl_ms]
                )
            )
        pipe = self._redis.pipeline()  # one batch per node, all at once
        self._file_on_cluster(pipe, key, tags, ttl_ms)
        pipe.set(lease, token, nx=True, px=self.lease_ms)
        return bool((await pipe.execute())[-1])

    async def _store(
        self, key: str, entry: Entry, generation: bytes, ttl_ms: int, tags: list[str]
    ) -> None:
        """Write the entry unless its key was invalidated since `generation` was read, and
        file its key under `tags`."""
        value = [redis_key(key), generation_key(key)]
        args = [entry.to_bytes(), generation, ttl_ms, key]
        if not self.on_cluster:
            # One atomic script: the tag sets are declared keys like the others.
            await self._set_script(keys=[*value, *map(tag_key, tags)], args=args)
            return
        if tags:
            # On a cluster each tag set lives in a slot of its own, so it cannot join the
            # script; filed first: an invalidation by the tag between the two steps then
            # finds the key, bumps its generation, and the value below is not written. The
            # other order would leave a value in Redis that no invalidation by tag finds.
            pipe = self._redis.pipeline()
            self._file_on_cluster(pipe, key, tags, ttl_ms)
            await pipe.execute()
        await self._set_script(keys=value, args=args)

    @staticmethod
    def _file_on_cluster(pipe: Any, key: str, tags: Iterable[str], ttl_ms: int) -> None:
        for tag in map(tag_key, tags):
            pipe.sadd(tag, key)
            # At least as long as the longest-lived entry under it (_SET_IF_GENERATION).
            pipe.pexpire(tag, ttl_ms, nx=True)
            pipe.pexpire(tag, ttl_ms, gt=True)

    async def _wait_for_other_process(
        self, key: str, lease: str, generation: bytes
    ) -> Entry | None:
        """Poll tier 2 while another process holds the lease. None when the lease is gone
        without a value (its holder failed, or died and the lease expired), or when the key
        was invalidated meanwhile: load then.

        The holder's value cannot be written after an invalidation (the generation check),
        so waiting on would be waiting for a value that never comes: under a steady stream
        of writes to one list (the mixed workload of loadtests/locustfile.py invalidates the
        first page with every new post) waiters went from one holder to the next, and the
        list's p99 under `fastpost bench --scenario mixed` was hundreds of milliseconds."""
        deadline = time.monotonic() + MAX_WAIT_SECONDS
        delay = 0.002
        names = (redis_key(key), lease, generation_key(key))  # one hash slot
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
            raw, held, now = await self._redis.mget(*names)
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
        if tags and self._inflight_tags:
            # Loads in flight under one of the tags read before this write: their results
            # must not be kept (in this process: below; in Redis: their generations move).
            dropped_tags = set(tags)
            keys |= {k for k, kt in self._inflight_tags.items() if dropped_tags.intersection(kt)}
        self._drop_locally(keys)
        if not self._redis_usable() or not (keys or tags):
            return
        try:
            if self.on_cluster:
                dropped = await self._invalidate_on_cluster(keys, tags)
            else:
                # One round trip, whatever the number of keys and tags (tests/cache/
                # test_invalidation_round_trips.py counts the commands Redis receives).
                found = await self._invalidate_script(
                    keys=list(map(tag_key, tags)),
                    args=[INVALIDATION_CHANNEL, GENERATION_TTL_SECONDS, *keys],
                )
                dropped = {key.decode() for key in found}
        except Exception as exc:
            self._redis_failed(exc)
            return
        # Keys only Redis knew under a tag: this worker must not serve them either.
        self._drop_locally(dropped - keys)

    async def _invalidate_on_cluster(self, keys: set[str], tags: tuple[str, ...]) -> set[str]:
        """What _INVALIDATE does on one server, on a cluster, where a key, its tags and the
        channel live in different hash slots: in up to three steps, each one batch per node
        involved, sent to all of them at once (redis-py's cluster pipeline). Returns the
        keys found under the tags."""
        found: set[str] = set()
        if tags:
            pipe = self._redis.pipeline()
            for tag in tags:
                # Read and removed in one command: a key filed between a read and a removal
                # would lose its only link to the tag.
                pipe.spop(tag_key(tag), _WHOLE_SET)
            for members in await pipe.execute():
                found.update(member.decode() for member in members or ())
        every_key = keys | found
        if not every_key:
            return found
        pipe = self._redis.pipeline()
        for key in every_key:
            # Generation first (in order: one slot, one node, one connection): a fill that
            # writes after it fails its generation check; one that wrote before is deleted.
            pipe.incr(generation_key(key))
            pipe.expire(generation_key(key), GENERATION_TTL_SECONDS)
            pipe.delete(redis_key(key))
        await pipe.execute()
        # Only now: a worker told before the deletes could read the old value back from
        # Redis into its tier 1.
        await self._redis.spublish(INVALIDATION_CHANNEL, "\n".join(sorted(every_key)))
        return found

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

    async def _listen_on_cluster(self) -> None:
        """The same on a cluster: a sharded subscription (SSUBSCRIBE, Redis 7) on the node
        that owns the channel's hash slot, over a connection of its own; resubscribed
        wherever the slot lives now after a failure or when the node lets the channel go
        (its slot moved: Redis then sends an unrequested `sunsubscribe`).

        Sharded, because a classic PUBLISH on a cluster is copied over the cluster bus to
        every node, whoever listens there, while SPUBLISH reaches the channel's shard only
        (tests/cache/test_cluster.py counts the bus messages). Our own few lines rather than
        redis-py's cluster pub/sub, which its 8.x releases are still settling."""
        assert self._location is not None
        while True:
            try:
                # The client learns the cluster's slots on first use (then this is a no-op);
                # it is asked afresh at the end of the loop, after a failure or a move.
                await self._redis.initialize()
                node = self._redis.get_node_from_key(INVALIDATION_CHANNEL)
                client = connect_node(
                    self._location, node.host, node.port, **self._connection_options()
                )
                async with client, client.pubsub() as pubsub:
                    await pubsub.ssubscribe(INVALIDATION_CHANNEL)
                    async for message in pubsub.listen():
                        kind = message.get("type")
                        if kind == "ssubscribe":
                            # Messages may have been missed while not subscribed.
                            self.local.clear()
                        elif kind == "smessage":
                            self._drop_locally(message["data"].decode().split("\n"))
                        elif kind == "sunsubscribe":
                            break
            except asyncio.CancelledError:
                raise
            except MovedError:
                # The slot moved before this client's map of the cluster knew it.
                await asyncio.sleep(0.05)
            except Exception as exc:
                # Logged, but no reason for the cache to skip Redis: its own commands tell
                # whether the nodes that hold its keys are away.
                self._redis_failed(exc, back_off=False)
                await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                await self._redis.nodes_manager.initialize()

    # -- Redis health ------------------------------------------------------------------

    def _redis_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    def _redis_failed(self, exc: BaseException, *, back_off: bool = True) -> None:
        now = time.monotonic()
        if back_off:
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
    misses, loads and invalidations (fastpost.observability.metrics.cache_event)."""
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
