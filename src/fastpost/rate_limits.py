"""Rate limits: per-client budgets on the routes an abuser would hammer, with the `limits`
library's sliding-window counters in Redis, shared by every worker.

Which routes, and whose budget (FASTPOST_RATE_LIMITS__*, see settings.RateLimitSettings):
- logins (`POST /auth/login`, `POST /api/users/login`): every attempt, per client address
  and per account named; registrations (`POST /auth/register`, `POST /api/users`): per
  address. Checked by the routes themselves (`limit_login`, `limit_registration`), which
  know the account only once the body is read.
- every POST, PUT, PATCH and DELETE that carries a valid token: per user; the reads that
  cost the database most and that no cache answers (search, the feeds): per address.
  Checked by `RateLimitLayer` before routing, so that a new write route is limited from the
  start; any other request costs the layer a method comparison (a write without a token,
  which is refused anyway, costs it one pass over the headers).

An exhausted budget answers 429 through the app's error handlers (so in the native shape,
and in RealWorld's under /api) with `Retry-After` and the fields of the IETF draft
"RateLimit header fields for HTTP" in their current form (draft-ietf-httpapi-ratelimit-
headers-08 and later): `RateLimit-Policy: "login-ip";q=20;w=60` and
`RateLimit: "login-ip";r=0;t=7`. Only 429s carry them: a successful answer would need a
second Redis round trip to know what remains.

Redis down or slow (`redis_timeout_seconds`): the limits go on from counters in the
worker's own memory (so each worker allows the whole budget while it lasts), a warning is
logged once per outage, and Redis is tried again after a short back-off. A request is
never refused, nor made to wait long, because Redis is away. Without FASTPOST_REDIS_URL the
counters are in memory from the start.

Client addresses are the ASGI client's: behind a proxy, uvicorn puts the address from
X-Forwarded-For there for the proxies it trusts (FORWARDED_ALLOW_IPS, 127.0.0.1 by default),
as with the nginx of `fastpost cluster`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from starlette.types import ASGIApp, Receive, Scope, Send

from fastpost.errors import AppError
from fastpost.security import Tokens, token_in
from fastpost.settings import RateLimitSettings

log = logging.getLogger("fastpost.rate_limits")

# How long the limits skip Redis after it failed before trying it again.
REDIS_BACKOFF_SECONDS = 5.0
KEY_PREFIX = "fastpost:ratelimit"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Limited by their routes, per address and account, not as writes of a user.
LOGIN_AND_REGISTRATION_PATHS = frozenset(
    {"/auth/login", "/auth/register", "/api/users/login", "/api/users"}
)
# Full-text search and the feeds: each a query over many rows, per caller, never cached.
EXPENSIVE_READ_PATHS = frozenset({"/posts/search", "/feed", "/api/articles/feed"})
# Schemes of a token the layer reads: fastpost's, and RealWorld's own.
_TOKEN_SCHEMES = ("bearer", "token")


@dataclass(frozen=True)
class Policy:
    """A named budget: one or more limits (say 20 a minute and 200 an hour), all enforced."""

    name: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, notation: str) -> Policy | None:
        items = tuple(parse_many(notation)) if notation.strip() else ()
        return cls(name, items) if items else None


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, policy: str, item: RateLimitItem, retry_after: int) -> None:
        super().__init__(
            f"Too many requests: at most {item.amount} per {_window_words(item)} "
            f"({policy}); try again in {retry_after} s"
        )
        self.policy = policy
        self.item = item
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        window = self.item.get_expiry()
        return {
            "Retry-After": str(self.retry_after),
            "RateLimit-Policy": f'"{self.policy}";q={self.item.amount};w={window}',
            "RateLimit": f'"{self.policy}";r=0;t={self.retry_after}',
        }


def _window_words(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


class RateLimits:
    """The budgets of one app, their counters in Redis (or in memory), and the checks."""

    def __init__(self, settings: RateLimitSettings, redis_url: str | None) -> None:
        self.login_ip = Policy.parse("login-ip", settings.login_per_ip)
        self.login_account = Policy.parse("login-account", settings.login_per_account)
        self.register_ip = Policy.parse("register-ip", settings.register_per_ip)
        self.writes_user = Policy.parse("writes-user", settings.writes_per_user)
        self.reads_ip = Policy.parse("expensive-reads-ip", settings.expensive_reads_per_ip)
        self._redis_url = redis_url
        self._timeout = settings.redis_timeout_seconds
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        # Made on first use, inside the running loop; closed by close().
        self._pool: Any = None
        self._client: Any = None
        self._redis: SlidingWindowCounterRateLimiter | None = None
        self._redis_down_until = 0.0
        self.using_memory_since: float | None = None

    def _redis_limiter(self) -> SlidingWindowCounterRateLimiter | None:
        if self._redis_url is None or time.monotonic() < self._redis_down_until:
            return None
        if self._redis is None:
            self._redis = SlidingWindowCounterRateLimiter(self._storage(self._redis_url))
        return self._redis

    def _storage(self, url: str) -> RedisStorage | RedisClusterStorage:
        timeouts = {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout}
        scheme, _, rest = url.partition("://")
        if scheme.endswith("+cluster") or "," in rest.partition("/")[0]:
            # A Redis Cluster (fastpost.redis_client's URL forms): the library's own
            # cluster storage, whose keys of one counter share a hash slot.
            cluster = RedisClusterStorage(
                "async+redis+cluster://" + rest,
                wrap_exceptions=True,
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                **timeouts,
            )
            # Its client, for close(): the library offers no close of its own. An attribute
            # it does not document, hence limits < 6 in pyproject.toml, and a test.
            self._client = cluster.bridge.storage  # type: ignore[attr-defined]
            return cluster
        import redis.asyncio as redis

        # A pool of our own (not the cache's), handed to the library's storage so that
        # close() can release its connections.
        self._pool = redis.ConnectionPool.from_url(url, **timeouts)
        return RedisStorage(
            # The pool holds where Redis is; the scheme only has to be one the library
            # takes for a server of Redis's (a socket's `unix://` is `redis+unix://` there).
            "async+" + ("redis+unix" if scheme == "unix" else scheme) + "://" + rest,
            wrap_exceptions=True,
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=self._pool,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        if self._client is not None:
            await self._client.aclose()
        self._pool = self._client = self._redis = None

    async def check(self, policy: Policy | None, key: str) -> None:
        """Count one request against `policy` for `key`; raise RateLimited when it is over."""
        if policy is None:
            return
        for item in policy.items:
            limiter = await self._hit(item, policy.name, key)
            if limiter is not None:
                reset, _ = await self._stats(limiter, item, policy.name, key)
                retry_after = max(1, math.ceil(reset - time.time()))
                raise RateLimited(policy.name, item, retry_after)

    async def _hit(
        self, item: RateLimitItem, name: str, key: str
    ) -> SlidingWindowCounterRateLimiter | None:
        """Count the hit; return the limiter that refused it, or None when allowed."""
        redis = self._redis_limiter()
        if redis is not None:
            try:
                async with asyncio.timeout(self._timeout * 2):
                    allowed = await redis.hit(item, name, key)
            except (StorageError, OSError, TimeoutError) as exc:
                self._redis_failed(exc)
            else:
                if self.using_memory_since is not None:
                    log.warning("rate limits: Redis answers again, counting there")
                    self.using_memory_since = None
                return None if allowed else redis
        return None if await self._memory.hit(item, name, key) else self._memory

    async def _stats(
        self, limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, name: str, key: str
    ) -> tuple[float, int]:
        try:
            async with asyncio.timeout(self._timeout * 2):
                stats = await limiter.get_window_stats(item, name, key)
        except (StorageError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return time.time() + item.get_expiry(), 0
        return stats.reset_time, stats.remaining

    def _redis_failed(self, exc: BaseException) -> None:
        self._redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
        if self.using_memory_since is None:
            self.using_memory_since = time.monotonic()
            # Once per outage: a dead Redis must not write a line per request.
            log.warning(
                "rate limits: Redis failed (%s); counting in this worker's memory until it "
                "answers again",
                type(exc).__name__,
            )


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _limits(request: Request) -> RateLimits | None:
    limits: RateLimits | None = getattr(request.app.state, "rate_limits", None)
    return limits


async def limit_login(request: Request, account: str) -> None:
    """A login attempt: counted per client address, then per account (any case)."""
    limits = _limits(request)
    if limits is not None:
        await limits.check(limits.login_ip, client_address(request.scope))
        await limits.check(limits.login_account, account.strip().casefold())


async def limit_registration(request: Request) -> None:
    """A registration attempt, counted per client address."""
    limits = _limits(request)
    if limits is not None:
        await limits.check(limits.register_ip, client_address(request.scope))


class RateLimitLayer:
    """Pure ASGI middleware: writes per user, expensive reads per address (see the module).

    Added only when rate limits are on. Its 429 is made by the app's own handler for
    AppError, so that it has the error shape of the API the path belongs to.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function handing on the app's awaitable: a request that is not limited
        # costs no coroutine of ours.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        method = scope["method"]
        if method in WRITE_METHODS:
            if scope["path"] in LOGIN_AND_REGISTRATION_PATHS:
                return self.app(scope, receive, send)
            user_id = _user_of(scope)
            if user_id is None:  # anonymous or a bad token: the route answers 401
                return self.app(scope, receive, send)
            return self._limited(scope, receive, send, "writes_user", str(user_id))
        if method == "GET" and scope["path"] in EXPENSIVE_READ_PATHS:
            return self._limited(scope, receive, send, "reads_ip", client_address(scope))
        return self.app(scope, receive, send)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, policy: str, key: str
    ) -> None:
        app = scope["app"]
        limits: RateLimits | None = getattr(app.state, "rate_limits", None)
        if limits is not None:
            try:
                await limits.check(getattr(limits, policy), key)
            except RateLimited as exc:
                request = Request(scope, receive)
                response = await _error_handler(app, exc)(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def document_limits(app: FastAPI, realworld_prefix: str) -> None:
    """Declare the 429 in OpenAPI on every operation the limits apply to, in the error shape
    of its API (FastAPI's documented way to extend the schema: wrap `app.openapi`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                limited = method.upper() in WRITE_METHODS or (
                    method == "get" and path in EXPENSIVE_READ_PATHS
                )
                responses = operation.get("responses")
                if not limited or responses is None or "429" in responses:
                    continue
                shape = "ErrorsOut" if path.startswith(realworld_prefix) else "ErrorOut"
                responses["429"] = {
                    "description": "Too many requests; see Retry-After and RateLimit",
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{shape}"}}
                    },
                }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _user_of(scope: Scope) -> int | None:
    """The user id of a valid token in the Authorization header, else None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = token_in(value.decode("latin-1"), _TOKEN_SCHEMES)
            if token is None:
                return None
            tokens: Tokens = scope["app"].state.tokens
            try:
                return tokens.user_id(token)
            except AppError:
                return None
    return None


def _error_handler(app: Any, exc: Exception) -> Any:
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    raise exc
