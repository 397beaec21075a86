"""Accounts in sharded mode: the user directory, registration and login.

Usernames and emails are unique across every database through `user_directory` on the
directory database, claimed before the user row is written on its own shard:
1. the new id, from the user's logical shard's sequence, on their database;
2. the directory row (username, email -> id): a name or email taken answers 409;
3. the user row, with that id, on their database.
A failure after 2 leaves a directory row without its user. The next registration of that
name (or email) takes such a row over, once it is older than ABANDONED_AFTER, so that a
registration still between its steps is never taken over: a retry repairs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, String, bindparam, cast, func, insert, select, text
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.exc import IntegrityError

from fastpost.cache import Cache
from fastpost.db import Database
from fastpost.errors import Conflict, Unauthorized
from fastpost.security import Passwords
from fastpost.shards.router import Shards
from fastpost.shards.shard_map import SEQUENCES, logical_shard_for_username
from fastpost.timeutil import utcnow
from fastpost.users import service as users_service
from fastpost.users.models import User
from fastpost.users.service import normalise_email, users

# Far longer than a registration's three statements may take (each bounded by the
# statement and pool timeouts, 5 s by default).
ABANDONED_AFTER = timedelta(minutes=2)

_NEXT_ID = select(func.nextval(cast(bindparam("id_sequence", type_=String), REGCLASS)).label("id"))
_CLAIM = text(
    "INSERT INTO user_directory (username_lower, email, user_id) "
    "VALUES (:username_lower, :email, :user_id) ON CONFLICT DO NOTHING RETURNING user_id"
).bindparams(bindparam("user_id", type_=BigInteger))
_CLAIMED = text(
    "SELECT username_lower, email, user_id, created_at FROM user_directory "
    "WHERE username_lower = :username_lower OR email = :email"
)
_RELEASE = text(
    "DELETE FROM user_directory WHERE username_lower = :username_lower AND user_id = :user_id"
).bindparams(bindparam("user_id", type_=BigInteger))
_USER_ID_NAMED = text("SELECT user_id FROM user_directory WHERE username_lower = lower(:username)")
_ANY_USER = select(users.c.id).where(users.c.id == bindparam("user_id", type_=BigInteger))
_INSERT_USER = insert(users).values(
    id=bindparam("id", type_=BigInteger),
    username=bindparam("username", type_=String),
    email=bindparam("email", type_=String),
    password_hash=bindparam("password_hash", type_=String),
    created_at=bindparam("now", type_=users.c.created_at.type),
    updated_at=bindparam("now", type_=users.c.updated_at.type),
)


async def _claim(shards: Shards, values: dict[str, Any]) -> None:
    """Write the directory row, taking over an abandoned one; 409 if the name or the email
    belongs to someone."""
    directory = shards.directory
    for _ in range(2):
        async with directory.transaction() as session:
            claimed = (await session.execute(_CLAIM, values)).first()
        if claimed is not None:
            return
        async with directory.reader() as conn:
            holders = (await conn.execute(_CLAIMED, values)).mappings().all()
        for holder in holders:
            exists = await shards.for_id(holder["user_id"]).fetch_one(
                _ANY_USER, {"user_id": holder["user_id"]}
            )
            if exists is not None or utcnow() - holder["created_at"] < ABANDONED_AFTER:
                if holder["username_lower"] == values["username_lower"]:
                    raise Conflict(
                        "Username is already taken", code="username_taken", field="username"
                    )
                raise Conflict("Email is already registered", code="email_taken", field="email")
            async with directory.transaction() as session:
                await session.execute(_RELEASE, dict(holder))
    raise Conflict("Username or email is already registered", code="user_exists")


async def register_user(
    *, shards: Shards, passwords: Passwords, username: str, email: str, password: str
) -> dict[str, Any]:
    """Create an account on its shard; 409 when the username or email is taken anywhere."""
    email = normalise_email(email)
    password_hash = await passwords.hash(password)
    logical = logical_shard_for_username(username)
    # The id, the claim and the row under the write gate: a move of this logical shard
    # waits for all three (router.Shards.writing).
    async with shards.writing(logical) as db:
        row = await db.fetch_one(_NEXT_ID, {"id_sequence": SEQUENCES[logical]})
        assert row is not None
        user_id = int(row["id"])
        await _claim(
            shards, {"username_lower": username.lower(), "email": email, "user_id": user_id}
        )
        now = utcnow()
        try:
            async with db.transaction() as session:
                await session.execute(
                    _INSERT_USER,
                    {
                        "id": user_id,
                        "username": username,
                        "email": email,
                        "password_hash": password_hash,
                        "now": now,
                    },
                )
        except IntegrityError:
            # The same name on this database already (a directory row lost by hand): the claim
            # just made is given back.
            async with shards.directory.transaction() as session:
                await session.execute(
                    _RELEASE, {"username_lower": username.lower(), "user_id": user_id}
                )
            raise Conflict("Username or email is already registered", code="user_exists") from None
    return {
        "id": user_id,
        "username": username,
        "email": email,
        "bio": None,
        "image": None,
        "created_at": now,
        "updated_at": now,
    }


_MOVE_CLAIM = text(
    "UPDATE user_directory SET username_lower = :username_lower, email = :email "
    "WHERE user_id = :user_id"
).bindparams(bindparam("user_id", type_=BigInteger))


_HELD_BY_OTHERS = text(
    "SELECT username_lower FROM user_directory "
    "WHERE (username_lower = :username_lower OR email = :email) AND user_id <> :user_id"
).bindparams(bindparam("user_id", type_=BigInteger))


async def _taken_conflict(shards: Shards, claim: dict[str, Any]) -> Conflict:
    """The 409 unsharded mode answers for a name or email someone else holds: the
    username's first, as users.service does."""
    holders = await shards.directory.fetch_all(_HELD_BY_OTHERS, claim)
    if any(holder["username_lower"] == claim["username_lower"] for holder in holders):
        return Conflict("Username is already taken", code="username_taken", field="username")
    if holders:
        return Conflict("Email is already registered", code="email_taken", field="email")
    return Conflict("Username or email is already registered", code="user_exists")


async def update_me(
    *,
    shards: Shards,
    cache: Cache,
    passwords: Passwords,
    user_id: int,
    changes: Mapping[str, Any],
) -> User:
    """Apply profile changes to the caller's account. A new username or email is claimed in
    the directory first (one UPDATE of their row: 409 if someone holds it), then the user
    row changes on its database as unsharded. A failure between the two leaves the
    directory ahead; the same request again (idempotent) completes it."""
    async with shards.writing_for(user_id) as db:
        if "username" in changes or "email" in changes:
            current = await db.fetch_one(users_service.ME, {"user_id": user_id})
            if current is None:
                raise Unauthorized("Account no longer exists", code="account_gone")
            claim = {
                "user_id": user_id,
                "username_lower": str(changes.get("username") or current["username"]).lower(),
                "email": normalise_email(str(changes.get("email") or current["email"])),
            }
            try:
                async with shards.directory.transaction() as session:
                    await session.execute(_MOVE_CLAIM, claim)
            except IntegrityError:
                raise await _taken_conflict(shards, claim) from None
        async with db.transaction() as session:
            user = await users_service.update_me(
                session=session, cache=cache, passwords=passwords, user_id=user_id, changes=changes
            )
        for callback in session.info.pop("after_commit", ()):
            await callback()
    return user


async def user_database(shards: Shards, username: str) -> Database | None:
    """The database of the user with this name (any case), from the directory."""
    row = await shards.directory.fetch_one(_USER_ID_NAMED, {"username": username})
    return None if row is None else shards.for_id(int(row["user_id"]))


async def authenticate(
    *, shards: Shards, passwords: Passwords, username: str, password: str, cache: Any
) -> int:
    """Return the id of the active user with these credentials, or raise Unauthorized: the
    directory names their database, where the check runs as unsharded."""
    db = await user_database(shards, username)
    if db is None:
        # The decoy hash still runs: an unknown name takes as long as a wrong password.
        await passwords.verify(None, password)
        raise Unauthorized("Incorrect username or password", code="invalid_credentials")
    return await users_service.authenticate(
        db=db, passwords=passwords, username=username, password=password, cache=cache
    )


async def user_id_named(shards: Shards, username: str) -> int | None:
    """The id of the user with this name (any case), from the directory."""
    row = await shards.directory.fetch_one(_USER_ID_NAMED, {"username": username})
    return None if row is None else int(row["user_id"])


_USER_ID_BY_EMAIL = text("SELECT user_id FROM user_directory WHERE email = :email")


async def authenticate_by_email(
    *, shards: Shards, passwords: Passwords, email: str, password: str, cache: Any
) -> int:
    """authenticate, by email (the RealWorld API's login): the directory names the
    account's database, where the check runs as unsharded."""
    row = await shards.directory.fetch_one(_USER_ID_BY_EMAIL, {"email": normalise_email(email)})
    if row is None:
        await passwords.verify(None, password)
        raise Unauthorized("Incorrect email or password", code="invalid_credentials")
    return await users_service.authenticate_by_email(
        db=shards.for_id(int(row["user_id"])),
        passwords=passwords,
        email=email,
        password=password,
        cache=cache,
    )
