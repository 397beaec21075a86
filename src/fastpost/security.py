"""Password hashing (Argon2id, off the event loop, a few at a time) and bearer tokens (JWT)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, TypeVar

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from fastpost.errors import AppError, Unauthorized
from fastpost.ids import MAX_ID
from fastpost.observability.request_stats import set_current_user
from fastpost.settings import Settings

T = TypeVar("T")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class PasswordChecksBusy(AppError):
    """Every hashing slot stayed taken for the whole queue timeout: shed the request."""

    status_code = 503
    code = "busy"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many logins at once, try again shortly", code=self.code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class Verification:
    """The outcome of a password check: whether it matched, and when the stored hash was
    made with other parameters, the same password hashed with the current ones."""

    ok: bool
    new_hash: str | None = None


class Passwords:
    """Argon2id hashing with a bounded number of hashes in flight.

    Each hash costs milliseconds of CPU and megabytes of memory by design, so it runs in a
    thread (argon2-cffi releases the GIL), and at most `concurrency` run at once per process:
    a login storm waits in line (for at most `queue_timeout` seconds, then 503) instead of
    taking every core and a block of memory per login from the reads.

    The threads are this object's own, not the loop's default executor: glibc keeps a freed
    Argon2 block in the malloc arena of the thread that used it, so each thread that has ever
    hashed holds one. Measured in one process on 2 CPUs, 100 checks at 19 MiB, 20 at a time,
    VmRSS after: 58 MiB with two threads of our own, 97 MiB through `asyncio.to_thread` (six
    threads) behind the same semaphore, for the same CPU per check. tests/test_security.py
    shows the bound on concurrent hashes.
    """

    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_cost_kib,
            parallelism=auth.argon2_parallelism,
            type=Type.ID,
        )
        self.concurrency = auth.password_hash_concurrency or available_cpus()
        self._queue_timeout = auth.password_queue_timeout_seconds
        # The semaphore is the queue (it can time out, and a login that gives up leaves no
        # work behind); the executor's thread count is the hard bound, even for a job whose
        # request was cancelled while it ran.
        self._slots = asyncio.Semaphore(self.concurrency)
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="argon2")
        # An app dropped without shutting down (tests build hundreds) ends its idle threads.
        weakref.finalize(self, self._threads.shutdown, wait=False)
        # Verified against when a username does not exist, so that a login for an unknown
        # user takes as long as one with a wrong password and does not reveal which it was.
        # Made by the same hasher, hence with the same parameters as every fresh hash.
        self._decoy_hash = self._hasher.hash("decoy password, never matches")

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify_sync(self, password_hash: str | None, password: str) -> Verification:
        """Check a password on this thread; rehash it when its hash is out of date."""
        try:
            self._hasher.verify(password_hash or self._decoy_hash, password)
        except (VerificationError, InvalidHashError):
            return Verification(ok=False)
        if password_hash is None:
            return Verification(ok=False)
        if self._hasher.check_needs_rehash(password_hash):
            # Only now do we hold the password that produced the old hash.
            return Verification(ok=True, new_hash=self._hasher.hash(password))
        return Verification(ok=True)

    async def hash(self, password: str) -> str:
        return await self._in_slot(self.hash_sync, password)

    async def verify(self, password_hash: str | None, password: str) -> Verification:
        """Check a password against its stored hash (None: no such user, a decoy is checked)."""
        return await self._in_slot(self.verify_sync, password_hash, password)

    async def _in_slot(self, work: Callable[..., T], *args: str | None) -> T:
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise PasswordChecksBusy(math.ceil(self._queue_timeout or 1)) from None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, work, *args)
        finally:
            self._slots.release()


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


def key_id(key: str) -> str:
    """The `kid` naming a signing key in its tokens' headers: a digest, not the key."""
    return hashlib.sha256(b"fastpost token key\0" + key.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _SigningKey:
    key: str
    # Tokens this key signed are accepted only if issued before this (epoch seconds): a
    # key retired by rotation. None: the current key.
    retired_at: float | None = None


_INVALID = "Invalid token"
# The header segments of tokens seen, with the key each names: a token's header is the
# same for every token one key signs, so its `kid` is read once. Bounded: anyone can send
# new headers.
_MAX_KNOWN_HEADERS = 64
# Tokens that verified, with their user id and when they stop being valid. Checking a
# token is most of what a logged-in read costs besides its statement (PyJWT's decode: 17 %
# of a worker's CPU serving GET /feed under wrk); a client sends the same token with every
# request. Bounded: a full table drops its oldest entry.
_MAX_VERIFIED_TOKENS = 4096


class Tokens:
    """JWTs carrying the user id as `sub`, signed with one configured algorithm.

    Checked: the signature, with the algorithm pinned (a token whose header names another,
    `none` included, is refused); `exp`, `iat` and `sub` present; `exp`, `nbf` and `iat`
    against the clock with `leeway_seconds` of skew; `sub` an id fastpost could have made.
    Rotation: tokens name their key in the `kid` header; the keys listed in
    `previous_secret_keys` still verify the tokens they signed until those expire (and,
    with `rotated_at` set, only tokens issued before it). A token without `kid` (issued
    before kids were) is checked against the current key.
    """

    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        self._algorithm = auth.algorithm
        self._algorithms = [auth.algorithm]
        self._leeway = auth.leeway_seconds
        self.lifetime = auth.token_lifetime_seconds
        self._key = settings.secret_key
        self._headers = {"kid": key_id(self._key)}
        retired_at = auth.rotated_at.timestamp() if auth.rotated_at is not None else None
        self._keys = {
            key_id(key): _SigningKey(key, retired_at) for key in auth.previous_secret_keys
        }
        self._keys[self._headers["kid"]] = self._current = _SigningKey(self._key)
        self._known_headers: dict[str, _SigningKey] = {}
        self._verified: dict[str, tuple[int, float]] = {}

    def issue(self, user_id: int, *, lifetime: int | None = None) -> IssuedToken:
        lifetime = self.lifetime if lifetime is None else lifetime
        now = int(time.time())
        claims = {"sub": str(user_id), "iat": now, "exp": now + lifetime}
        token = jwt.encode(claims, self._key, algorithm=self._algorithm, headers=self._headers)
        return IssuedToken(token, lifetime)

    def _signing_key(self, token: str) -> _SigningKey:
        header = token.partition(".")[0]
        known = self._known_headers.get(header)
        if known is not None:
            return known
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise Unauthorized(_INVALID, code="invalid_token") from None
        found: _SigningKey | None = self._current
        if kid is not None:
            # Not a string: a list would not even be a dict key (TypeError, a 500).
            found = self._keys.get(kid) if isinstance(kid, str) else None
        if found is None:
            raise Unauthorized(_INVALID, code="invalid_token")
        if len(self._known_headers) < _MAX_KNOWN_HEADERS:
            self._known_headers[header] = found
        return found

    def user_id(self, token: str) -> int:
        """Return the user id a token was issued for, or raise Unauthorized."""
        # The key is the whole token, signature included: a token found here is byte for
        # byte one that passed every check below. Of those checks, only the expiry can
        # change its answer later (the keys and their retirement are fixed for the process,
        # and a time a token was valid after stays behind us), so it is the one redone.
        verified = self._verified.get(token)
        if verified is not None:
            user_id, valid_until = verified
            if time.time() < valid_until:
                return user_id
            del self._verified[token]  # and checked in full below, which says it expired
        return self._check(token)

    def _check(self, token: str) -> int:
        signing = self._signing_key(token)
        try:
            claims = jwt.decode(
                token,
                signing.key,
                algorithms=self._algorithms,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized(_INVALID, code="invalid_token") from None
        if signing.retired_at is not None and int(claims["iat"]) >= signing.retired_at:
            raise Unauthorized(_INVALID, code="invalid_token")
        sub = claims["sub"]
        # Digits only (str.isdigit takes "²" too, which int() refuses) and an id fastpost
        # could have made: a larger one, validly signed, would overflow the database's
        # integer and answer 500.
        if not isinstance(sub, str) or not (sub.isascii() and sub.isdigit()) or len(sub) > 16:
            raise Unauthorized(_INVALID, code="invalid_token")
        user_id = int(sub)
        if not 1 <= user_id <= MAX_ID:
            raise Unauthorized(_INVALID, code="invalid_token")
        if len(self._verified) >= _MAX_VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        # PyJWT refuses a token once `exp + leeway` is past: so does the table.
        self._verified[token] = (user_id, int(claims["exp"]) + self._leeway)
        return user_id


def token_in(authorization: str, schemes: tuple[str, ...]) -> str | None:
    """The token of an `Authorization: <scheme> <token>` header value whose scheme (any
    case) is one of `schemes` (lower case), or None."""
    scheme, _, token = authorization.partition(" ")
    return token if token and scheme.lower() in schemes else None


class _BearerUser(OAuth2PasswordBearer):
    """The caller's user id from `Authorization: Bearer <token>`, in one dependency.

    A subclass of OAuth2PasswordBearer so that OpenAPI (and the Authorize button of /docs)
    still knows the scheme; one dependency rather than a chain of two, because FastAPI's
    dependency solving is a measurable share of a hot read's CPU.
    """

    def __init__(self, *, required: bool) -> None:
        # auto_error=False: we raise our own 401, in the shared error shape.
        super().__init__(
            tokenUrl="/auth/login", scheme_name="OAuth2PasswordBearer", auto_error=False
        )
        self.required = required

    async def __call__(self, request: Request) -> int | None:  # type: ignore[override]
        token = token_in(request.headers.get("authorization", ""), ("bearer",))
        if token is None:
            if self.required:
                raise Unauthorized("Not authenticated")
            return None
        state = request.app.state
        tokens: Tokens = state.tokens
        # A token that is present but bad is an error even where login is optional: silently
        # answering as anonymous would hide an expired session from the client.
        user_id = tokens.user_id(token)
        await state.account_check(request, user_id)
        set_current_user(user_id)  # for the access log line
        return user_id


# Refuses (401) a valid token whose account is gone or deactivated; `app.state.account_check`,
# set by create_app to fastpost.users.router.refuse_gone_account (the users domain imports
# this module, so this module cannot import it). It reads the account from the cache.
AccountCheck = Callable[[Request, int], Awaitable[None]]

# The id of the caller, from the bearer token and the cached state of its account (see
# AccountCheck): on a cache hit, no database round trip.
OptionalUserId = Annotated[int | None, Depends(_BearerUser(required=False))]
CurrentUserId = Annotated[int, Depends(_BearerUser(required=True))]
