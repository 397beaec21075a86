"""What the users domain does: accounts, profiles, login."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from fastpost import cache_keys
from fastpost.cache import Cache, Entry
from fastpost.db import Database, Row, after_commit, table_of
from fastpost.errors import Conflict, NotFound, Unauthorized
from fastpost.responses import dump_json
from fastpost.security import Passwords
from fastpost.timeutil import utcnow
from fastpost.users.models import User

log = logging.getLogger("fastpost.users")
users = table_of(User)

PROFILE_TTL = 300.0  # Redis lifetime; a profile edit invalidates it
PROFILE_COLUMNS = (users.c.id, users.c.username, users.c.bio, users.c.image, users.c.created_at)
_ACTIVE_BY_ID = (users.c.id == bindparam("user_id", type_=BigInteger), users.c.is_active)
_PROFILE = select(*PROFILE_COLUMNS).where(*_ACTIVE_BY_ID)
_ME_COLUMNS = (*PROFILE_COLUMNS, users.c.email, users.c.updated_at)
_ME_KEYS = tuple(column.key for column in _ME_COLUMNS)
ME = select(*_ME_COLUMNS).where(*_ACTIVE_BY_ID)
# With the caller's own profile: a login caches it (remember_me), so that the account
# check of the requests its token makes next finds it (cached_me).
# A name is one account whatever its case (migration 0006's index on lower(username)).
_CREDENTIALS = select(*_ME_COLUMNS, users.c.password_hash).where(
    func.lower(users.c.username) == func.lower(bindparam("username", type_=String)),
    users.c.is_active,
)
_CREDENTIALS_BY_EMAIL = select(*_ME_COLUMNS, users.c.password_hash).where(
    users.c.email == bindparam("email", type_=String), users.c.is_active
)
# Only over the hash the check was made against: a password changed meanwhile stays changed.
_UPGRADE_HASH = (
    update(users)
    .where(
        users.c.id == bindparam("user_id", type_=BigInteger),
        users.c.password_hash == bindparam("old_hash"),
    )
    .values(password_hash=bindparam("new_hash"))
)


def normalise_email(email: str) -> str:
    # Addresses differ only in case in practice never; uniqueness must not depend on it.
    return email.strip().lower()


async def _ensure_unique(
    session: AsyncSession, *, username: str | None, email: str | None, except_id: int | None = None
) -> None:
    conditions = []
    if username is not None:
        # Whatever its case: `Admin` is taken when `admin` is (the index of migration 0006
        # refuses it anyway; this answers with the field that clashed).
        conditions.append(func.lower(User.username) == username.lower())
    if email is not None:
        conditions.append(User.email == email)
    if not conditions:
        return
    stmt = select(User.username, User.email).where(or_(*conditions))
    if except_id is not None:
        stmt = stmt.where(User.id != except_id)
    for taken_username, _email in (await session.execute(stmt)).all():
        if username is not None and taken_username.lower() == username.lower():
            raise Conflict("Username is already taken", code="username_taken", field="username")
        raise Conflict("Email is already registered", code="email_taken", field="email")


async def register_user(
    *, session: AsyncSession, passwords: Passwords, username: str, email: str, password: str
) -> User:
    """Create an account; 409 when the username or email is taken."""
    email = normalise_email(email)
    # Hash before the first statement: the session checks out its connection lazily, so the
    # tens of milliseconds of Argon2 never hold a pooled connection (or, on SQLite, the
    # single write lock) hostage.
    password_hash = await passwords.hash(password)
    await _ensure_unique(session, username=username, email=email)
    now = utcnow()
    user = User(
        username=username,
        email=email,
        password_hash=password_hash,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # Lost a race with a concurrent registration of the same name. The transaction is
        # rolled back whole at the route boundary.
        raise Conflict("Username or email is already registered", code="user_exists") from None
    return user


async def authenticate(
    *,
    db: Database,
    passwords: Passwords,
    username: str,
    password: str,
    cache: Cache | None = None,
) -> int:
    """Return the id of the active user with these credentials, or raise Unauthorized."""
    # The connection is back in the pool before the slow hash check starts.
    row = await db.fetch_one(_CREDENTIALS, {"username": username})
    return await _check_password(
        db=db, passwords=passwords, row=row, password=password, cache=cache
    )


async def authenticate_by_email(
    *, db: Database, passwords: Passwords, email: str, password: str, cache: Cache | None = None
) -> int:
    """Return the id of the active user with this email and password, or raise Unauthorized."""
    row = await db.fetch_one(_CREDENTIALS_BY_EMAIL, {"email": normalise_email(email)})
    return await _check_password(
        db=db, passwords=passwords, row=row, password=password, cache=cache
    )


async def _check_password(
    *, db: Database, passwords: Passwords, row: Row | None, password: str, cache: Cache | None
) -> int:
    # verify() runs even for an unknown user, against a decoy hash: equal timing.
    stored = row["password_hash"] if row else None
    verification = await passwords.verify(stored, password)
    if not verification.ok or row is None:
        raise Unauthorized("Incorrect username or password", code="invalid_credentials")
    user_id: int = row["id"]
    if verification.new_hash is not None:
        # Hashed already, outside the transaction: it holds a connection (on SQLite, the
        # write lock) for one short UPDATE only.
        try:
            async with db.transaction() as session:
                await session.execute(
                    _UPGRADE_HASH,
                    {"user_id": user_id, "old_hash": stored, "new_hash": verification.new_hash},
                )
        except OperationalError:
            # The login stands; the upgrade is tried again at the next one.
            log.warning("could not upgrade the password hash of user %s", user_id, exc_info=True)
    if cache is not None:
        await remember_me(cache=cache, me={key: row[key] for key in _ME_KEYS})
    return user_id


async def get_profile(*, db: Database, user_id: int) -> Mapping[str, Any]:
    """Return a user's public profile; 404 when there is no such active user."""
    row = await db.fetch_one(_PROFILE, {"user_id": user_id})
    if row is None:
        raise NotFound("User not found", code="user_not_found")
    return dict(row)  # asyncpg's Record is not a dict, and pydantic validates dicts


async def cached_profile(*, db: Database, cache: Cache, user_id: int) -> Entry:
    """A user's public profile, the same for every caller."""

    async def load() -> Entry:
        profile = await get_profile(db=db, user_id=user_id)
        return Entry.of(dump_json(profile))

    # Tagged with the user: a profile edit drops it with every post and list showing them.
    return await cache.get_or_load(
        cache_keys.profile(user_id), load, ttl=PROFILE_TTL, tags=[cache_keys.user_tag(user_id)]
    )


async def get_me(*, db: Database, user_id: int) -> Mapping[str, Any]:
    """Return the caller's own profile, with email."""
    row = await db.fetch_one(ME, {"user_id": user_id})
    if row is None:
        # The token is valid but its account is gone or deactivated.
        raise Unauthorized("Account no longer exists", code="account_gone")
    return dict(row)


# The caller's own profile, cached per user: every logged-in client reads it, and on SQLite
# the statement costs more than the rest of the request (tests/perf/test_write_statements.py,
# and the in-process figures in the lead's note). Tagged with the user, so that a profile
# edit or a deactivation (set_active) drops it like everything else showing them; a short
# lifetime bounds what an account deactivated behind the API's back still sees.
ME_TTL = 30.0
# What the entry holds for an account that is gone or deactivated: cached like a profile,
# so that a deleted user's token costs no query per request either.
_GONE = b""


async def cached_me(*, db: Database, cache: Cache, user_id: int) -> bytes:
    """The caller's own profile as JSON, with email; 401 when the account is gone.

    Also the check of every authenticated request (fastpost.security.AccountCheck): the same
    entry answers both, so checking costs a lookup in tier 1, and a miss loads what
    GET /users/me would load anyway (tests/perf/test_logged_in_reads.py counts them)."""

    async def load() -> Entry:
        row = await db.fetch_one(ME, {"user_id": user_id})
        return Entry.of(_GONE if row is None else dump_json(dict(row)))

    entry = await cache.get_or_load(
        cache_keys.me(user_id), load, ttl=ME_TTL, tags=[cache_keys.user_tag(user_id)]
    )
    if entry.body == _GONE:
        raise Unauthorized("Account no longer exists", code="account_gone")
    return entry.body


async def remember_me(*, cache: Cache, me: Mapping[str, Any]) -> None:
    """Cache an account's own profile that another statement read (a login's, with the
    columns of ME in their order), as cached_me would load it."""
    entry = Entry.of(dump_json(dict(me)))

    async def already_loaded() -> Entry:
        return entry

    await cache.get_or_load(
        cache_keys.me(me["id"]), already_loaded, ttl=ME_TTL, tags=[cache_keys.user_tag(me["id"])]
    )


async def set_active(*, db: Database, cache: Cache, username: str, active: bool) -> int | None:
    """Deactivate or reactivate an account; return its id (None: no such user). Its tokens
    are refused (or accepted again) from the next request on, in every worker."""
    async with db.transaction() as session:
        user_id: int | None = await session.scalar(
            update(users)
            .where(func.lower(users.c.username) == username.lower())
            .values(is_active=active, updated_at=utcnow())
            .returning(users.c.id)
        )
    if user_id is not None:
        await cache.invalidate(tags=[cache_keys.user_tag(user_id)])
    return user_id


async def update_me(
    *,
    session: AsyncSession,
    cache: Cache,
    passwords: Passwords,
    user_id: int,
    changes: Mapping[str, Any],
) -> User:
    """Apply profile changes to the caller's account."""
    changes = dict(changes)
    if "password" in changes:  # before the first statement: see register_user
        changes["password_hash"] = await passwords.hash(changes.pop("password"))
    user = await session.get(User, user_id, with_for_update=True)
    if user is None or not user.is_active:
        raise Unauthorized("Account no longer exists", code="account_gone")
    # Everything that shows this user: their profile, posts, lists and overviews.
    after_commit(session, lambda: cache.invalidate(tags=[cache_keys.user_tag(user_id)]))
    if "email" in changes:
        changes["email"] = normalise_email(changes["email"])
    await _ensure_unique(
        session,
        username=changes.get("username") if changes.get("username") != user.username else None,
        email=changes.get("email") if changes.get("email") != user.email else None,
        except_id=user_id,
    )
    for name, value in changes.items():
        setattr(user, name, value)
    user.updated_at = utcnow()
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("Username or email is already registered", code="user_exists") from None
    return user
