"""Idempotency-Key: a POST retried with the same key gets the first answer instead of
running twice (draft-ietf-httpapi-idempotency-key-header).

A client that timed out on `POST /posts/` cannot tell whether the post was made. It sends
the same request again with the same `Idempotency-Key`; the first request's status,
headers and body come back, marked `Idempotency-Replayed: true`, and nothing is written
twice. Keys are kept for `FASTPOST_API__IDEMPOTENCY_TTL_SECONDS` (24 h by default).

- A key belongs to its caller: the user of a valid token, else a hash of the
  Authorization header, else "anonymous" (where the key alone decides), so that nobody
  replays another user's answer.
- The same key with another method, path, query or body: 422. The same key while its first
  request is still running: 409 with Retry-After (the draft's answer; waiting for the first
  would hold a connection and a worker's slot per duplicate, and the client retries anyway).
- Only answers that a retry should see again are kept: 2xx, and 4xx other than 408, 425
  and 429. A 5xx, or an exception, frees the key so that a retry runs.

Kept in the database (the `idempotency_keys` table), on the primary, not in Redis: the
record is then exactly as durable and as available as the write it guards, and works on
the embedded default (SQLite, no Redis). Redis is our cache tier, which may evict keys
under memory pressure or lose them on restart: each would be a second post.

The record is claimed in a transaction of its own before the route runs and filled in
after the route's transaction committed, before the answer leaves: a worker that dies in
between (after the commit, before the record is filled in) leaves the key in flight; once
its lock (`FASTPOST_API__IDEMPOTENCY_LOCK_SECONDS`) runs out, a retry runs the request
again, so that one crash in that window can make one duplicate. Closing the window would
take the record into the route's own transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastpost.db import Base, Database, insert_ignoring_conflicts
from fastpost.errors import AppError, error_body
from fastpost.realworld.errors import errors_body
from fastpost.request_body import replaying
from fastpost.security import token_in
from fastpost.timeutil import utcnow

log = logging.getLogger("fastpost.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = (b"idempotency-replayed", b"true")
MAX_KEY_LENGTH = 255
# Answers a retry should not see again: the client is told to come back later.
_TRANSIENT_4XX = frozenset({408, 425, 429})
# Headers of the connection or of this one answer, not of the resource: never replayed.
# Cookies neither: they hold the client's state as of the first answer (fastpost.replicas'
# read-your-writes position), which a later write of the same client may have moved on;
# replayed, they would take it back.
_NOT_REPLAYED = frozenset(
    {
        b"set-cookie",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"date",
        b"server",
        b"x-request-id",
        b"server-timing",
    }
)
# How often a process deletes expired keys (with the claim that finds it due).
CLEANUP_INTERVAL_SECONDS = 600.0
# Claims lost to a record freed between our INSERT and our SELECT before we answer 409.
_CLAIM_ATTEMPTS = 3

idempotency_keys = sa.Table(
    "idempotency_keys",
    Base.metadata,
    sa.Column("caller", sa.String(80), primary_key=True),
    sa.Column("key", sa.String(MAX_KEY_LENGTH), primary_key=True),
    # sha256 of method, path, query and body.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    # Who holds the key while its request runs: only that request fills it in or frees it.
    sa.Column("owner", sa.String(32), nullable=False),
    # NULL while the first request runs.
    sa.Column("status", sa.SmallInteger),
    sa.Column("headers", sa.Text),
    sa.Column("body", sa.LargeBinary),
    sa.Column("route", sa.String(200)),
    sa.Column("locked_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class Claimed:
    owner: str


@dataclass(frozen=True, slots=True)
class Stored:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    route: str | None


class InFlight:
    pass


class Mismatch:
    pass


Claim = Claimed | Stored | InFlight | Mismatch


def keeps(status: int) -> bool:
    """Is an answer with this status kept for retries (else the key is freed)?"""
    return 200 <= status < 300 or (400 <= status < 500 and status not in _TRANSIENT_4XX)


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """Return what identifies a request for its key: a hash of method, path, query, body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def parse_key(value: bytes) -> str | None:
    """Return the key of an Idempotency-Key header, or None when it is not a valid one.

    The draft makes it a Structured Field string (`"8e03978e-..."`); a bare token, as
    Stripe's clients send, is taken too."""
    try:
        key = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        return None
    return key


class IdempotencyStore:
    """The `idempotency_keys` table: claim a key, fill it in, free it."""

    def __init__(self, db: Database, *, ttl_seconds: int, lock_seconds: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_seconds)
        self.lock = timedelta(seconds=lock_seconds)
        self._next_cleanup = 0.0

    async def claim(self, *, caller: str, key: str, fingerprint: str) -> Claim:
        """Claim `key` for a request, or say why not: its stored answer, in flight, mismatch."""
        table = idempotency_keys
        mine = (table.c.caller == caller) & (table.c.key == key)
        for _ in range(_CLAIM_ATTEMPTS):
            now = utcnow()
            owner = secrets.token_hex(16)
            fresh = {
                "fingerprint": fingerprint,
                "owner": owner,
                "status": None,
                "headers": None,
                "body": None,
                "route": None,
                "locked_until": now + self.lock,
                "expires_at": now + self.ttl,
                "created_at": now,
            }
            async with self.db.transaction() as session:
                if time.monotonic() >= self._next_cleanup:
                    self._next_cleanup = time.monotonic() + CLEANUP_INTERVAL_SECONDS
                    await session.execute(sa.delete(table).where(table.c.expires_at <= now))
                insert = insert_ignoring_conflicts(session, table)
                inserted = await session.execute(
                    insert.values(caller=caller, key=key, **fresh).returning(table.c.owner)
                )
                if inserted.first() is not None:
                    return Claimed(owner)
                # An expired key starts afresh; the same request whose holder died (its
                # lock ran out before it answered) runs again.
                stale = (table.c.expires_at <= now) | (
                    table.c.status.is_(None)
                    & (table.c.locked_until <= now)
                    & (table.c.fingerprint == fingerprint)
                )
                taken = await session.execute(
                    sa.update(table).where(mine & stale).values(**fresh).returning(table.c.owner)
                )
                if taken.first() is not None:
                    return Claimed(owner)
                query = sa.select(
                    table.c.fingerprint,
                    table.c.status,
                    table.c.headers,
                    table.c.body,
                    table.c.route,
                ).where(mine)
                row = (await session.execute(query)).first()
            if row is None:  # freed between our insert and our read: try again
                continue
            if row.fingerprint != fingerprint:
                return Mismatch()
            if row.status is None:
                return InFlight()
            headers = [
                (n.encode("latin-1"), v.encode("latin-1")) for n, v in json.loads(row.headers)
            ]
            return Stored(row.status, headers, row.body or b"", row.route)
        return InFlight()

    async def fill_in(self, *, caller: str, key: str, owner: str, answer: Stored) -> None:
        """Keep the answer of the request that holds `key`, for its retries."""
        table = idempotency_keys
        headers = json.dumps(
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in answer.headers]
        )
        async with self.db.transaction() as session:
            await session.execute(
                sa.update(table)
                .where((table.c.caller == caller) & (table.c.key == key) & (table.c.owner == owner))
                .values(status=answer.status, headers=headers, body=answer.body, route=answer.route)
            )

    async def free(self, *, caller: str, key: str, owner: str) -> None:
        """Forget the key held by a request that failed, so that a retry runs."""
        table = idempotency_keys
        async with self.db.transaction() as session:
            await session.execute(
                sa.delete(table).where(
                    (table.c.caller == caller) & (table.c.key == key) & (table.c.owner == owner)
                )
            )


class IdempotencyKeys:
    """Pure ASGI middleware: replay the answer of a POST whose Idempotency-Key was seen."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ttl_seconds: int,
        lock_seconds: float,
        realworld_prefix: str,
    ) -> None:
        self.app = app
        self.ttl_seconds = ttl_seconds
        self.lock_seconds = lock_seconds
        self.realworld_prefix = realworld_prefix
        self._store: IdempotencyStore | None = None

    def store(self, scope: Scope) -> IdempotencyStore:
        db: Database = scope["app"].state.db
        if self._store is None or self._store.db is not db:
            self._store = IdempotencyStore(
                db, ttl_seconds=self.ttl_seconds, lock_seconds=self.lock_seconds
            )
        return self._store

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # A plain function that hands on the app's own awaitable: a request without a key
        # costs no coroutine of ours, only the method comparison and, for a POST, one pass
        # over the headers.
        if scope["type"] != "http" or scope["method"] != "POST":
            return self.app(scope, receive, send)
        for name, _ in scope["headers"]:
            if name == b"idempotency-key":
                return self._keyed(scope, receive, send)
        return self.app(scope, receive, send)

    async def _keyed(self, scope: Scope, receive: Receive, send: Send) -> None:
        value = authorization = None
        keys = 0
        for name, header in scope["headers"]:
            if name == b"idempotency-key":
                value = header
                keys += 1
            elif name == b"authorization":
                authorization = header
        assert value is not None
        key = parse_key(value) if keys == 1 else None
        if key is None:
            await self._refuse(
                scope,
                send,
                422,
                f"{HEADER} must be one string of 1 to {MAX_KEY_LENGTH} printable ASCII "
                "characters, sent once",
                "validation_error",
            )
            return

        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # nobody is left to answer
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:
            # Over the body limit (see middleware.Edge): the route's read of the body fails
            # the same way and the shared handler answers 413.
            await self.app(scope, _failing(exc), send)
            return
        body = b"".join(chunks)

        store = self.store(scope)
        caller = _caller(scope, authorization)
        claim = await store.claim(
            caller=caller,
            key=key,
            fingerprint=fingerprint(scope["method"], scope["path"], scope["query_string"], body),
        )
        if isinstance(claim, Stored):
            await _replay(scope, send, claim)
        elif isinstance(claim, InFlight):
            await self._refuse(
                scope,
                send,
                409,
                f"A request with this {HEADER} is still being processed; retry it later",
                "idempotency_key_in_flight",
                headers=[(b"retry-after", b"1")],
            )
        elif isinstance(claim, Mismatch):
            await self._refuse(
                scope,
                send,
                422,
                f"This {HEADER} was used with a different request; use a new key for a new request",
                "idempotency_key_reused",
            )
        else:
            await self._run(scope, replaying(body, receive), send, store, caller, key, claim.owner)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        store: IdempotencyStore,
        caller: str,
        key: str,
        owner: str,
    ) -> None:
        """Run the request that holds the key; keep its answer, or free the key."""
        held: list[Message] = []
        chunks: list[bytes] = []
        status = 0
        done = False

        async def keep_then_send(message: Message) -> None:
            nonlocal status, done
            if done:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.start":
                status = message["status"]
                return
            if message["type"] != "http.response.body":
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            done = True
            # Kept before the client sees the answer: a retry sent the moment it arrives
            # must find the answer, not a key in flight.
            try:
                if keeps(status):
                    route = scope.get("route")
                    answer = Stored(
                        status,
                        [
                            (name, value)
                            for name, value in held[0].get("headers", ())
                            if name.lower() not in _NOT_REPLAYED
                        ],
                        b"".join(chunks),
                        route.path if route is not None else None,
                    )
                    await store.fill_in(caller=caller, key=key, owner=owner, answer=answer)
                else:
                    await store.free(caller=caller, key=key, owner=owner)
            except Exception:
                # The write is done and its answer goes out; a retry meets the key in flight
                # until its lock runs out (the window the module's docstring describes).
                log.exception("could not keep the answer for an %s", HEADER)
            for message in held:
                await send(message)

        try:
            await self.app(scope, receive, keep_then_send)
        except BaseException:
            if not done:
                try:
                    await store.free(caller=caller, key=key, owner=owner)
                except Exception:
                    # The request's own error is the one to report; the key stays in
                    # flight until its lock runs out.
                    log.exception("could not free an %s", HEADER)
            raise

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        code: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if scope["path"].startswith(self.realworld_prefix):
            shaped = errors_body({HEADER: [detail]})
        else:
            field = {"field": HEADER, "message": detail, "type": code}
            shaped = error_body(detail, code, [field] if status == 422 else None)
        body = json.dumps(shaped).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or ()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _caller(scope: Scope, authorization: bytes | None) -> str:
    """Whose keys a request's key is among: a user, a set of credentials, or anonymous."""
    if authorization is None:
        return "anonymous"
    token = token_in(authorization.decode("latin-1"), ("bearer", "token"))
    if token is not None:
        try:
            return f"user:{scope['app'].state.tokens.user_id(token)}"
        except AppError:  # expired or forged: the route will refuse it
            pass
    return "credentials:" + hashlib.sha256(authorization).hexdigest()


async def _replay(scope: Scope, send: Send, stored: Stored) -> None:
    if stored.route is not None:
        # Metrics and logs label requests by route template, as if routed.
        scope["route"] = SimpleNamespace(path=stored.route)
    headers: list[Any] = [
        *stored.headers,
        (b"content-length", str(len(stored.body)).encode()),
        REPLAYED,
    ]
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body})


def _failing(exc: HTTPException) -> Callable[[], Any]:
    async def failing_receive() -> Message:
        raise exc

    return failing_receive
