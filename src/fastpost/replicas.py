"""Read replicas: which server a read goes to, and how each worker knows the replicas' state.

With `FASTPOST_DB__REPLICA_URLS` set, `Database.fetch_all` asks `ReplicaSet.choose()` for a
replica before it reads; None means the primary. The rules, in the order they are checked:
- Reads inside a write go to the primary: every read of a request that is not GET, HEAD or
  OPTIONS (a POST's look-ups, a login's credentials) or that opened a write session.
- Cache fills go to the primary (`primary_reads()` around the cache's loader): an entry is
  shared by every caller for seconds, and a fill from a replica that has not replayed a
  write yet, made just after that write's invalidation, would put the old value back for
  all of them. The readiness probe's ping goes there too.
- Read-your-writes. After a write commits, its request takes the primary's WAL position
  (`SELECT pg_current_wal_lsn()`, one statement per write) and hands it to the client as
  the cookie `fastpost_lsn`, and, when Redis is configured and the writer is logged in,
  keeps it in Redis under the user's id for clients that drop cookies (token clients). A
  later read carrying a position (the cookie, or else the logged-in user's entry in Redis)
  goes to a replica that has replayed at least that far, as the monitor last saw it (a
  lower bound: replay only moves forward), or else to the primary. Both expire once any
  replica in rotation must have replayed them: after the maximum lag and two checks.
- Otherwise a replica in rotation, in turn; none in rotation: the primary.

Health: each worker runs `monitor()`, which every `replica_check_interval_seconds` reads
the primary's WAL position and each replica's replay position and lag on connections of
its own (a busy pool never delays a check). A replica is in rotation when it answered, is
in recovery and its lag is within `replica_max_lag_seconds`. A read that fails on a
replica is run again on the primary, once (reads are idempotent), and a connection error
takes the replica out at once; the monitor puts it back when it answers again.

Lag is an upper bound on the age of the newest change a replica lacks: 0 when it has
replayed the primary's position of this check; else the smaller of the age of the last
transaction it replayed (PostgreSQL's usual measure, which overstates the lag after an idle
spell) and the time since the last check whose primary position it has reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import math
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.closing import close_pool
from fastpost.observability import metrics
from fastpost.observability.request_stats import current_request
from fastpost.pool_gate import PoolGate
from fastpost.settings import DatabaseSettings

log = structlog.get_logger("fastpost.replicas")

LSN_COOKIE = "fastpost_lsn"
_COOKIE_NAME = LSN_COOKIE.encode() + b"="
# A check that takes longer than this counts as a failure: a replica that hangs is taken out
# of rotation within about one interval plus this.
CHECK_TIMEOUT_SECONDS = 1.0
_LSN_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_REPLICA_STATE = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
)
PRIMARY_LSN = "SELECT pg_current_wal_lsn()"

# Keep the client's position only if it is greater than the one stored: two writes of one
# user from two clients may finish in any order. Positions are stored as 16 hex digits, so
# that comparing the strings compares the numbers.
_KEEP_GREATER = """
local current = redis.call('GET', KEYS[1])
if (not current) or current < ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


# A position no replica reaches: the client's reads go to the primary until it expires.
PRIMARY_UNTIL_EXPIRY = 2**64 - 1


def lsn_text(lsn: int) -> str:
    """A WAL position as PostgreSQL writes it: "16/B374D848"."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int | None:
    match = _LSN_TEXT.match(text)
    if match is None:
        return None
    return (int(match[1], 16) << 32) | int(match[2], 16)


def position_ttl_seconds(settings: DatabaseSettings) -> int:
    """How long a client's last write position matters: by then every replica in rotation
    has replayed it (a replica further behind is out)."""
    return (
        math.ceil(settings.replica_max_lag_seconds + 2 * settings.replica_check_interval_seconds)
        + 1
    )


def user_key(user_id: int) -> str:
    return f"fastpost:lsn:user:{user_id}"


class Routing:
    """Where the reads of one request may go; made per request by ReadYourWrites and shared,
    by reference, with the tasks the request spawns."""

    __slots__ = ("floor", "floor_known", "primary", "written")

    def __init__(self, *, floor: int | None, primary: bool) -> None:
        # The WAL position the client's reads must see (0: none); unknown until the cookie
        # was read or, without one, Redis was asked.
        self.floor = floor or 0
        self.floor_known = floor is not None
        self.primary = primary  # a write: every read on the primary
        self.written: int | None = None  # the primary's position after this request's commit


_routing: contextvars.ContextVar[Routing | None] = contextvars.ContextVar(
    "fastpost_read_routing", default=None
)
_primary_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fastpost_primary_reads", default=False
)


@contextlib.contextmanager
def primary_reads() -> Iterator[None]:
    """Send every read made in this block (and tasks it starts) to the primary."""
    token = _primary_only.set(True)
    try:
        yield
    finally:
        _primary_only.reset(token)


def carries_position() -> bool:
    """Whether the client of the current request wrote within a position's lifetime (it sent
    the cookie). Another worker's in-process cache may not have had that write's
    invalidation yet; a cache could skip its local tier for such a client."""
    routing = _routing.get()
    return routing is not None and routing.floor > 0


def _floor_in(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"cookie":
            start = value.find(_COOKIE_NAME)
            while start > 0 and value[start - 1 : start] not in (b" ", b";"):
                start = value.find(_COOKIE_NAME, start + 1)
            if start < 0:
                continue
            start += len(_COOKIE_NAME)
            end = value.find(b";", start)
            found = parse_lsn(value[start : end if end >= 0 else None].decode("latin-1").strip())
            if found is not None:
                return found
    return None


class ReadYourWrites:
    """Reads the client's WAL position from its cookie, and sets it after a write.

    Pure ASGI, installed only when replicas are configured. The cookie holds nothing
    secret: a client that forges it only sends its own reads to the primary, or reads older
    data itself."""

    def __init__(self, app: ASGIApp, *, max_age_seconds: int) -> None:
        self.app = app
        self.attributes = f"; Max-Age={max_age_seconds}; Path=/; HttpOnly; SameSite=Lax".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        routing = Routing(
            floor=_floor_in(scope["headers"]), primary=scope["method"] not in _READ_METHODS
        )

        async def send_with_position(message: Message) -> None:
            # The write's session dependency has committed before the response starts.
            if message["type"] == "http.response.start" and routing.written is not None:
                value = lsn_text(max(routing.written, routing.floor)).encode()
                cookie = (b"set-cookie", _COOKIE_NAME + value + self.attributes)
                message = {**message, "headers": [*message.get("headers", ()), cookie]}
            await send(message)

        token = _routing.set(routing)
        try:
            await self.app(scope, receive, send_with_position)
        finally:
            _routing.reset(token)


@dataclass(eq=False)
class Replica:
    url: str  # for asyncpg, with the password if any
    label: str  # host:port, for metrics and /health/ready: never the password
    pool: Any = None  # asyncpg.Pool
    gate: PoolGate | None = None  # its waiters in arrival order (fastpost.pool_gate)
    in_rotation: bool = False
    replay_lsn: int = 0  # as the last check saw it
    lag_seconds: float | None = None
    reason: str | None = "not checked yet"
    checked_at: float | None = None  # time.monotonic()
    _conn: Any = field(default=None, repr=False)  # the monitor's own connection


def _asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _label(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


# Errors that say the server or the connection to it is gone, not that the statement was
# wrong: the replica leaves rotation at once.
def _connection_lost(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.exceptions.CannotConnectNowError,
    )


class ReplicaSet:
    """The replicas of one worker: a pool each, their state, and the choice of one."""

    def __init__(self, settings: DatabaseSettings, *, redis_url: str | None = None) -> None:
        self.settings = settings
        self.replicas = [Replica(_asyncpg_url(url), _label(url)) for url in settings.replica_urls]
        self.max_lag = settings.replica_max_lag_seconds
        self.interval = settings.replica_check_interval_seconds
        self.position_ttl_seconds = position_ttl_seconds(settings)
        self._primary_url = _asyncpg_url(settings.url)
        self._primary_conn: Any = None
        self.checks = 0  # made so far: each reads the primary's position once
        self._rotation: tuple[Replica, ...] = ()
        self._turn = itertools.count()
        # (time.monotonic(), primary WAL position) at recent checks, oldest first.
        self._primary_positions: deque[tuple[float, int]] = deque(
            maxlen=math.ceil(self.max_lag / self.interval) + 4
        )
        self._redis_url = redis_url
        self._redis: Any = None
        self._keep_greater: Any = None

    async def connect(self, keep_session: Any) -> None:
        """Make the pools (no connection yet: a replica may be down when we start)."""
        import asyncpg

        for replica in self.replicas:
            replica.pool = await asyncpg.create_pool(
                replica.url,
                min_size=0,
                max_size=self.settings.pool_size,
                reset=keep_session,
                # A frozen replica accepts TCP and never answers: only this ends a connect.
                timeout=self.settings.connect_timeout,
            )
            replica.gate = PoolGate(self.settings.pool_size)
        if self._redis_url is not None:
            from fastpost.redis_client import connect, parse_redis_url

            # One server or a cluster: a position is one key, and _KEEP_GREATER declares it.
            self._redis = connect(
                parse_redis_url(self._redis_url), socket_timeout=0.25, socket_connect_timeout=0.25
            )
            self._keep_greater = self._redis.register_script(_KEEP_GREATER)

    async def close(self) -> None:
        for replica in self.replicas:
            await _close(replica._conn)
            replica._conn = None
            if replica.pool is not None:
                await close_pool(replica.pool)
                replica.pool = None
        await _close(self._primary_conn)
        self._primary_conn = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- choosing ----------------------------------------------------------------------

    async def choose(self) -> Replica | None:
        """The replica this read goes to; None: the primary."""
        if _primary_only.get():
            metrics.reads_routed.inc(("primary", "primary_only"))
            return None
        routing = _routing.get()
        if routing is not None and routing.primary:
            metrics.reads_routed.inc(("primary", "write"))
            return None
        rotation = self._rotation
        if not rotation:
            metrics.reads_routed.inc(("primary", "no_replica"))
            return None
        if routing is not None:
            if not routing.floor_known:
                await self._look_up_floor(routing)
            floor = routing.floor
            if floor:
                rotation = tuple(r for r in rotation if r.replay_lsn >= floor)
                if not rotation:
                    metrics.reads_routed.inc(("primary", "read_your_writes"))
                    return None
        replica = rotation[next(self._turn) % len(rotation)]
        metrics.reads_routed.inc((replica.label, "replica"))
        return replica

    async def _look_up_floor(self, routing: Routing) -> None:
        """A client without the cookie: the logged-in user's last write, from Redis."""
        routing.floor_known = True
        stats = current_request.get()
        user_id = stats.user_id if stats is not None else None
        if user_id is None or self._redis is None:
            return
        try:
            found = await self._redis.get(user_key(user_id))
        except Exception as exc:
            # Not knowing the user's last write, their reads take no risk.
            log.warning("replica_floor_unknown", error=repr(exc))
            routing.primary = True
            return
        if found is not None:
            routing.floor = int(found, 16)

    async def fetch(self, replica: Replica, sql: str, args: Sequence[Any]) -> Sequence[Any] | None:
        """Run a read on `replica`; None when it failed there (the caller reads the primary)."""
        pool, gate = replica.pool, replica.gate
        assert gate is not None  # made with the pool
        try:
            # The whole read, connection wait included: a replica whose pool is exhausted or
            # that hangs hands the read back to the primary.
            async with asyncio.timeout(self.settings.pool_timeout):
                await gate.acquire()
                try:
                    conn = await pool.acquire()
                    try:
                        rows: Sequence[Any] = await conn.fetch(sql, *args)
                    except BaseException:
                        # Cut off or timed out mid-statement: released as it is, it would
                        # wait for the replica to acknowledge a cancel (for ever, if it is
                        # frozen).
                        with contextlib.suppress(Exception):  # already back if it was closed
                            conn.terminate()
                        raise
                    finally:
                        await pool.release(conn)
                finally:
                    gate.release()
            return rows
        except Exception as exc:
            if _connection_lost(exc):
                await self._take_out(
                    replica, f"read failed: {type(exc).__name__}: {exc}", unreachable=True
                )
            metrics.reads_routed.inc(("primary", "retry"))
            log.warning("replica_read_failed", replica=replica.label, error=repr(exc)[:300])
            return None

    # -- writes ------------------------------------------------------------------------

    def writing(self) -> None:
        """The current request writes: its reads go to the primary from now on."""
        routing = _routing.get()
        if routing is not None:
            routing.primary = True

    async def committed(self, lsn: int) -> None:
        """Hand the client the primary's position after its write (cookie, Redis)."""
        routing = _routing.get()
        if routing is not None:
            routing.written = max(routing.written or 0, lsn)
        stats = current_request.get()
        if stats is None or stats.user_id is None or self._keep_greater is None:
            return
        try:
            await self._keep_greater(
                keys=[user_key(stats.user_id)],
                args=[f"{lsn:016X}", self.position_ttl_seconds * 1000],
            )
        except Exception as exc:
            log.warning("replica_floor_not_kept", error=repr(exc))

    # -- health ------------------------------------------------------------------------

    async def _take_out(self, replica: Replica, reason: str, *, unreachable: bool) -> None:
        if replica.in_rotation:
            log.warning("replica_out_of_rotation", replica=replica.label, reason=reason)
        replica.in_rotation = False
        replica.reason = reason
        self._rotation = tuple(r for r in self.replicas if r.in_rotation)
        metrics.db_replica_in_rotation.labels(replica.label).set(0)
        if unreachable and replica.pool is not None:
            # Its idle connections are dead too: replaced on their next use, so that the
            # replica does not fail reads again on them once it is back.
            await replica.pool.expire_connections()

    def _put_back(self, replica: Replica) -> None:
        if not replica.in_rotation:
            log.info("replica_in_rotation", replica=replica.label, lag=replica.lag_seconds)
        replica.in_rotation = True
        replica.reason = None
        self._rotation = tuple(r for r in self.replicas if r.in_rotation)
        metrics.db_replica_in_rotation.labels(replica.label).set(1)

    async def monitor(self) -> None:
        """Check every replica every interval, for ever (a task of the app's lifespan)."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                await self.check()
        finally:
            await _close(self._primary_conn)
            self._primary_conn = None

    async def check(self) -> None:
        """Read the primary's position, then each replica's state, and update the rotation."""
        self.checks += 1
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                self._primary_conn = await _connected(self._primary_conn, self._primary_url)
                position = await self._primary_conn.fetchval(PRIMARY_LSN)
            self._primary_positions.append((time.monotonic(), int(position)))
        except Exception as exc:
            # Replicas go on serving reads while the primary is away; their lag is then
            # judged by the last positions seen and their replay timestamps.
            _discard(self._primary_conn)
            self._primary_conn = None
            log.warning("primary_position_unknown", error=repr(exc)[:300])
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                replica._conn = await _connected(replica._conn, replica.url)
                in_recovery, replay_lsn, since_replay = await replica._conn.fetchrow(_REPLICA_STATE)
        except Exception as exc:
            _discard(replica._conn)
            replica._conn = None
            replica.lag_seconds = None
            replica.checked_at = time.monotonic()
            metrics.db_replica_lag_seconds.labels(replica.label).set(math.inf)
            await self._take_out(
                replica, f"check failed: {type(exc).__name__}: {exc}"[:300], unreachable=True
            )
            return
        replica.checked_at = now = time.monotonic()
        if not in_recovery or replay_lsn is None:
            # Promoted, or a primary given as a replica: its data may have parted from ours.
            replica.lag_seconds = None
            metrics.db_replica_lag_seconds.labels(replica.label).set(math.inf)
            await self._take_out(replica, "not a replica: not in recovery", unreachable=False)
            return
        replica.replay_lsn = int(replay_lsn)
        lag = replica.lag_seconds = self._lag(replica.replay_lsn, since_replay, now)
        metrics.db_replica_lag_seconds.labels(replica.label).set(lag)
        if lag > self.max_lag:
            await self._take_out(
                replica, f"lag {lag:.1f} s > {self.max_lag:g} s", unreachable=False
            )
        else:
            self._put_back(replica)

    def _lag(self, replay_lsn: int, since_replay: float | None, now: float) -> float:
        positions = self._primary_positions
        if positions and replay_lsn >= positions[-1][1]:
            return 0.0
        bound = math.inf
        for seen_at, position in reversed(positions):
            if position <= replay_lsn:
                bound = now - seen_at
                break
        if since_replay is not None:
            bound = min(bound, max(0.0, float(since_replay)))
        return bound

    def status(self) -> list[dict[str, Any]]:
        """Each replica's state as the last check saw it (for /health/ready)."""
        return [
            {
                "replica": r.label,
                "in_rotation": r.in_rotation,
                "lag_seconds": None
                if r.lag_seconds is None or math.isinf(r.lag_seconds)
                else round(r.lag_seconds, 3),
                "replay_lsn": lsn_text(r.replay_lsn) if r.replay_lsn else None,
                "reason": r.reason,
            }
            for r in self.replicas
        ]

    def pool_usage(self) -> Mapping[str, tuple[int, int, int]]:
        usage = {}
        for replica in self.replicas:
            if replica.pool is not None:
                size = replica.pool.get_size()
                checked_out = size - replica.pool.get_idle_size()
                usage[f"replica {replica.label}"] = (checked_out, replica.pool.get_max_size(), 0)
        return usage


async def _connected(conn: Any, url: str) -> Any:
    import asyncpg

    if conn is not None and not conn.is_closed():
        return conn
    return await asyncpg.connect(url)


def _discard(conn: Any) -> None:
    """Drop a connection whose state is unknown (a check failed or timed out on it)."""
    if conn is not None:
        conn.terminate()


async def _close(conn: Any) -> None:
    if conn is not None and not conn.is_closed():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 1)
