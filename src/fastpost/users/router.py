"""HTTP routes: /auth (register, login) and /users (profiles)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from fastpost.cache import CacheDep
from fastpost.db import DatabaseDep, WriteSession
from fastpost.errors import ErrorOut, InvalidInput, error_responses
from fastpost.http_caching import cached_response, private_response
from fastpost.rate_limits import limit_login, limit_registration
from fastpost.routing import PrefixRouter
from fastpost.security import CurrentUserId, Passwords, Tokens
from fastpost.users import service
from fastpost.users.schemas import LoginIn, MeOut, MeUpdate, RegisterIn, TokenOut, UserOut

auth_router = PrefixRouter(prefix="/auth", tags=["auth"])
users_router = PrefixRouter(prefix="/users", tags=["users"])

UserIdPath = Annotated[int, Path(ge=1, le=2**53 - 1, description="User id")]
# Routes that hash a password may shed load: see fastpost.security.Passwords.
_BUSY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "Too many password checks queued; see Retry-After"}
}


def passwords_of(request: Request) -> Passwords:
    """The app's password hasher (fastpost.security.Passwords)."""
    passwords: Passwords = request.app.state.passwords
    return passwords


async def refuse_gone_account(request: Request, user_id: int) -> None:
    """401 when the account a valid token names is gone or deactivated (every route that
    authenticates asks: fastpost.security.AccountCheck)."""
    state = request.app.state
    await service.cached_me(db=state.db, cache=state.cache, user_id=user_id)


@auth_router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses={**error_responses(409, 413, 422, 429), **_BUSY},
)
async def register(body: RegisterIn, session: WriteSession, request: Request) -> MeOut:
    """Create an account."""
    await limit_registration(request)
    user = await service.register_user(
        session=session,
        passwords=passwords_of(request),
        username=body.username,
        email=str(body.email),
        password=body.password,
    )
    return MeOut.model_validate(user, from_attributes=True)


# The login's request body in the OpenAPI schema: JSON, or OAuth2's password form.
LOGIN_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": LoginIn.model_json_schema()},
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {
                    "username": {"type": "string"},
                    "password": {"type": "string", "format": "password"},
                },
                "required": ["username", "password"],
            }
        },
    },
}


async def read_login(request: Request) -> LoginIn:
    """Read a login's username and password from a JSON body or an OAuth2 form."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/x-www-form-urlencoded") or content_type.startswith(
            "multipart/form-data"
        ):
            form = await request.form()
            raw: Any = {k: form.get(k) for k in ("username", "password") if k in form}
        else:
            raw = json.loads(await request.body() or b"null")
        return LoginIn.model_validate(raw)
    # Not JSON, not UTF-8 (UnicodeDecodeError is a ValueError, its message the whole body:
    # the password, were it logged), or nested deeper than the parser recurses. `from None`
    # everywhere: the body never reaches a traceback.
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ValidationError):
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None
        raise InvalidInput("Body is not valid JSON", code="invalid_json", field="body") from None


@auth_router.post(
    "/login",
    openapi_extra={"requestBody": LOGIN_BODY},
    responses={**error_responses(401, 413, 422, 429), **_BUSY},
)
async def login(request: Request, db: DatabaseDep) -> TokenOut:
    """Exchange a username and password for a bearer token (JSON or OAuth2 form)."""
    credentials = await read_login(request)
    await limit_login(request, credentials.username)
    user_id = await service.authenticate(
        db=db,
        passwords=passwords_of(request),
        username=credentials.username,
        password=credentials.password,
        # Caches the account for the account check of the requests the token makes next.
        cache=request.app.state.cache,
    )
    tokens: Tokens = request.app.state.tokens
    issued = tokens.issue(user_id)
    return TokenOut(access_token=issued.access_token, expires_in=issued.expires_in)


@users_router.get("/me", response_model=MeOut, responses=error_responses(401))
async def read_me(user_id: CurrentUserId, db: DatabaseDep, cache: CacheDep) -> Response:
    """The caller's own profile."""
    # Serialised once, in MeOut's shape, and cached per user (users.service.cached_me);
    # private, no-store for HTTP caches: it holds the email.
    return private_response(await service.cached_me(db=db, cache=cache, user_id=user_id))


@users_router.patch("/me", responses={**error_responses(401, 409, 413, 422), **_BUSY})
async def update_me(
    body: MeUpdate,
    user_id: CurrentUserId,
    session: WriteSession,
    cache: CacheDep,
    request: Request,
) -> MeOut:
    """Change the caller's username, email, password, bio or image."""
    user = await service.update_me(
        session=session,
        cache=cache,
        passwords=passwords_of(request),
        user_id=user_id,
        changes=body.model_dump(exclude_unset=True, mode="json"),
    )
    return MeOut.model_validate(user, from_attributes=True)


@users_router.get("/{user_id}", response_model=UserOut, responses=error_responses(404, 422))
async def read_user(
    request: Request, user_id: UserIdPath, db: DatabaseDep, cache: CacheDep
) -> Response:
    """A user's public profile (cached, with an ETag)."""
    entry = await service.cached_profile(db=db, cache=cache, user_id=user_id)
    return cached_response(request.headers, entry)
