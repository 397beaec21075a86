"""Scratch databases for benchmarks: create, migrate and seed with the `fastpost` command.

A seeded database can be kept and reused (`keep`): it is reused when it holds exactly the
users and posts asked for, since seeding a million posts takes minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from rich.console import Console
from sqlalchemy.engine import URL, make_url

from fastpost.bench.servers import ROOT

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def asyncpg_dsn(url: URL) -> str:
    """Return `url` as a DSN asyncpg accepts (no +driver)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _postgres_counts(dsn: str) -> tuple[int, int] | None:
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        users = await conn.fetchval("SELECT count(*) FROM users")
        posts = await conn.fetchval("SELECT count(*) FROM posts")
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()
    return int(users), int(posts)


def _sqlite_counts(path: Path) -> tuple[int, int] | None:
    if not path.exists():
        return None
    try:
        with sqlite3.connect(path) as conn:
            users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
            posts = conn.execute("SELECT count(*) FROM posts").fetchone()[0]
    except sqlite3.Error:
        return None
    return int(users), int(posts)


async def recreate_postgres(admin_dsn: str, name: str, *, drop_only: bool = False) -> None:
    """Drop the database `name` (closing its sessions) and create it afresh."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        if not drop_only:
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


def drop_postgres(admin_url: str, name: str, console: Console) -> None:
    """Drop the scratch database, saying so when it cannot."""
    try:
        asyncio.run(recreate_postgres(asyncpg_dsn(make_url(admin_url)), name, drop_only=True))
    except (OSError, asyncpg.PostgresError) as exc:
        console.print(f"[yellow]could not drop database {name}: {exc}[/yellow]")


def run_fastpost(env: dict[str, str], *args: str) -> None:
    """Run `fastpost ARGS` in a child process; raise with its output when it fails."""
    command = [sys.executable, "-m", "fastpost.cli", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`fastpost {' '.join(args)}` failed:\n{done.stdout}{done.stderr}")


def _migrate_and_seed(
    env: dict[str, str], url: str, seed_args: dict[str, int], console: Console
) -> None:
    env = {**env, "FASTPOST_DB__URL": url}
    run_fastpost(env, "db", "upgrade")
    started = time.monotonic()
    args = [part for name, n in seed_args.items() for part in (f"--{name}", str(n))]
    run_fastpost(env, "seed", *args)
    sizes = ", ".join(f"{n:,} {name}" for name, n in seed_args.items())
    console.print(f"seeded {sizes} in {time.monotonic() - started:.1f} s", highlight=False)


def prepare_postgres(
    admin_url: str,
    name: str,
    *,
    seed_args: dict[str, int],
    keep: bool,
    env: dict[str, str],
    console: Console,
) -> URL:
    """Create, migrate and seed the PostgreSQL database `name` (or reuse it); return its URL."""
    admin = make_url(admin_url)
    if not admin.drivername.startswith("postgresql"):
        raise SystemExit("--database-url must be a PostgreSQL URL")
    url = admin.set(drivername="postgresql+asyncpg", database=name)
    wanted = (seed_args["users"], seed_args["posts"])
    if keep and asyncio.run(_postgres_counts(asyncpg_dsn(url))) == wanted:
        console.print(f"reusing database {name} ({wanted[0]:,} users, {wanted[1]:,} posts)")
        return url
    console.print(f"creating database {name}")
    asyncio.run(recreate_postgres(asyncpg_dsn(admin), name))
    _migrate_and_seed(env, url.render_as_string(hide_password=False), seed_args, console)
    return url


def prepare_sqlite(
    path: Path, *, seed_args: dict[str, int], keep: bool, env: dict[str, str], console: Console
) -> str:
    """Create, migrate and seed the SQLite file at `path` (or reuse it); return its URL."""
    url = f"sqlite+aiosqlite:///{path.resolve()}"
    wanted = (seed_args["users"], seed_args["posts"])
    if keep and _sqlite_counts(path) == wanted:
        console.print(f"reusing {path} ({wanted[0]:,} users, {wanted[1]:,} posts)")
        return url
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"creating {path}")
    _migrate_and_seed(env, url, seed_args, console)
    return url


def prepare_database(
    args: argparse.Namespace, env: dict[str, str], console: Console | None = None
) -> URL:
    """prepare_postgres with the options of the benchmarks/ scripts (users and posts only)."""
    return prepare_postgres(
        args.database_url,
        args.db_name,
        seed_args={"users": args.users, "posts": args.posts},
        keep=args.keep_db,
        env=env,
        console=console or Console(),
    )
