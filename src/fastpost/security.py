"""Password hashing (Argon2, off the event loop) and bearer tokens (JWT)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from fastpost.errors import Unauthorized
from fastpost.request_stats import set_current_user
from fastpost.settings import Settings


class Passwords:
    """Argon2 hashing. Each hash costs tens of milliseconds of CPU by design, so it runs in a
    worker thread (argon2-cffi releases the GIL) and never stalls other requests."""

    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        self._hasher = PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_cost_kib,
            parallelism=auth.argon2_parallelism,
        )
        # Verified against when a username does not exist, so that a login for an unknown
        # user takes as long as one with a wrong password and does not reveal which it was.
        self._decoy_hash = self._hasher.hash("decoy password, never matches")

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._decoy_hash, password)
            except (VerificationError, InvalidHashError):
                return False

        ok = await asyncio.to_thread(check)
        return ok and password_hash is not None


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class Tokens:
    """HS256 JWTs carrying the user id as `sub`."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.secret_key
        self._algorithm = settings.auth.algorithm
        self.lifetime = settings.auth.token_lifetime_seconds

    def issue(self, user_id: int, *, lifetime: int | None = None) -> IssuedToken:
        lifetime = self.lifetime if lifetime is None else lifetime
        now = int(time.time())
        claims = {"sub": str(user_id), "iat": now, "exp": now + lifetime}
        return IssuedToken(jwt.encode(claims, self._key, algorithm=self._algorithm), lifetime)

    def user_id(self, token: str) -> int:
        """Return the user id a token was issued for, or raise Unauthorized."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token has expired", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("Invalid token", code="invalid_token") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.isdigit():
            raise Unauthorized("Invalid token", code="invalid_token")
        return int(sub)


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
        tokens: Tokens = request.app.state.tokens
        # A token that is present but bad is an error even where login is optional: silently
        # answering as anonymous would hide an expired session from the client.
        user_id = tokens.user_id(token)
        set_current_user(user_id)  # for the access log line
        return user_id


# The id of the caller, from the bearer token alone: no database round trip. A deactivated
# account keeps access until its token expires (token_lifetime_seconds), the usual trade of
# stateless tokens.
OptionalUserId = Annotated[int | None, Depends(_BearerUser(required=False))]
CurrentUserId = Annotated[int, Depends(_BearerUser(required=True))]
