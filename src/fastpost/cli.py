"""The `fastpost` command: serve the API, migrate the database, load data."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fastpost.settings import DatabaseSettings, Settings

app = typer.Typer(
    help="fastpost: a blog and social REST API built for speed.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(
    help="The database: migrations (Alembic), and what it spends its time on (top, explain).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
admin_app = typer.Typer(
    help="Admins: who may ask for a profile of any request (?profile=1).", no_args_is_help=True
)
app.add_typer(admin_app, name="admin")
console = Console()
# prometheus_client's multiprocess folder (see fastpost.observability.metrics).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


class HttpServer(StrEnum):
    uvicorn = "uvicorn"
    granian = "granian"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    access_log: Annotated[
        bool, typer.Option(help="The server's own line per request (costs throughput).")
    ] = False,
    server: Annotated[
        HttpServer,
        typer.Option(help="uvicorn (uvloop, httptools), or granian (the `granian` extra)."),
    ] = HttpServer.uvicorn,
    graceful_timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="After SIGTERM, seconds to let requests in flight finish before they are cut "
            "off (default: wait for every one).",
        ),
    ] = None,
) -> None:
    """Serve the API on HOST:PORT with uvicorn (default) or granian."""
    if server is HttpServer.granian and importlib.util.find_spec("granian") is None:
        console.print(
            "[red]granian is not installed:[/red] pip install 'fastpost[granian]' "
            "(or .venv/bin/pip install granian)"
        )
        raise typer.Exit(2)
    settings = _settings()
    # Resolve the signing key once, here: workers started next all read the same one.
    _ = settings.secret_key
    # First: the budget check imports the data layer, and with it prometheus_client.
    _prepare_metrics_dir(settings)
    asyncio.run(_check_connection_budget(settings, workers))
    console.print(
        f"fastpost on http://{host}:{port} (docs at /docs), {workers} worker(s) on "
        f"{server.value}, database "
        + (
            f"sharded over {len(settings.db.shards)}"
            if settings.db.shards
            else settings.db.url.split("://")[0]
        )
    )
    run = _run_granian if server is HttpServer.granian else _run_uvicorn
    run(
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        access_log=access_log,
        log_level=settings.observability.log_level.lower(),
        graceful_timeout=graceful_timeout,
    )


# The factory each worker calls: the app, and the process tuned for serving it
# (FASTPOST_SERVE__TUNE_GC).
WORKER_APP = "fastpost.worker:create_worker_app"


def _run_uvicorn(
    *,
    host: str,
    port: int,
    workers: int,
    reload: bool,
    access_log: bool,
    log_level: str,
    graceful_timeout: int | None,
) -> None:
    import uvicorn

    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_level": log_level,
        # None: uvicorn waits for every request in flight, however long.
        "timeout_graceful_shutdown": graceful_timeout,
        # No `server: uvicorn` header: which server and version answers is nobody's business.
        "server_header": False,
    }
    if reload or workers == 1:
        uvicorn.run(WORKER_APP, workers=None if reload else 1, reload=reload, **options)
        return
    from fastpost.supervisor import Supervisor

    config = uvicorn.Config(WORKER_APP, workers=workers, **options)
    Supervisor(config, sockets=[config.bind_socket()]).run()


def _run_granian(
    *,
    host: str,
    port: int,
    workers: int,
    reload: bool,
    access_log: bool,
    log_level: str,
    graceful_timeout: int | None,
) -> None:
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    # Workers are processes (multiprocessing: fork on Linux, spawn where fork is not the
    # default); both inherit PROMETHEUS_MULTIPROC_DIR, set above before any was started.
    Granian(
        WORKER_APP,
        factory=True,
        address=host,
        port=port,
        # ASGI with lifespan (not "asginl"): startup opens the pools, shutdown closes them.
        interface=Interfaces.ASGI,
        workers=workers,
        reload=reload,
        log_access=access_log,
        log_level=LogLevels(log_level),
        # How long the main process waits for a stopping worker before killing it; None:
        # for ever, and each worker finishes its requests in flight before its lifespan ends.
        workers_kill_timeout=graceful_timeout,
    ).serve()


def _prepare_metrics_dir(settings: Settings) -> None:
    """Give the workers an empty prometheus_client multiprocess folder.

    Set here, before uvicorn starts any worker: prometheus_client picks its storage when it
    is imported, and each worker imports it afresh. Emptied here because counters left by
    an earlier run would be added to this one's; never while another server uses it
    (fastpost.observability.metrics_folder).
    """
    # Not through fastpost.observability.metrics: importing prometheus_client here, before
    # the variable is set, would put a single worker (which runs in this process) in
    # single-process mode.
    from fastpost.observability.metrics_folder import FolderInUse, claim_metrics_folder

    named = os.environ.get(MULTIPROC_ENV) or settings.observability.metrics_dir
    try:
        path = claim_metrics_folder(
            Path(named or settings.data_dir / "metrics"), explicit=bool(named)
        )
    except FolderInUse as exc:
        console.print(f"[red]{exc}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if named is None and path.name.startswith("serve-"):
        console.print(
            f"another fastpost serve uses {path.parent}: metrics in {path}", soft_wrap=True
        )
    os.environ[MULTIPROC_ENV] = str(path)


async def _check_connection_budget(settings: Settings, workers: int) -> None:
    """Refuse to start when the workers' pools together could exceed max_connections."""
    if settings.db.shards:
        # Sharded mode: each worker has both pools on every database; databases on one
        # server share its max_connections.
        from sqlalchemy.engine import make_url

        by_server: dict[tuple[str | None, int | None], list[str]] = {}
        for url in settings.db.shards:
            parsed = make_url(url)
            by_server.setdefault((parsed.host, parsed.port), []).append(url)
        for urls in by_server.values():
            await _check_server_budget(
                settings.db.for_shard(urls[0]), settings, workers * len(urls)
            )
        return
    if settings.db.is_sqlite:
        return
    await _check_server_budget(settings.db, settings, workers)


async def _check_server_budget(
    database: DatabaseSettings, settings: Settings, workers: int
) -> None:
    from sqlalchemy import text

    from fastpost.db import Database

    db = Database(database)
    try:
        async with db.reader() as conn:
            limit = int(await conn.scalar(text("SHOW max_connections")) or 0)
    finally:
        await db.dispose()
    per_worker = settings.db.pool_size + settings.db.write_pool_size
    # Keep a few for superuser maintenance (superuser_reserved_connections defaults to 3).
    budget = limit - 5
    if workers * per_worker > budget:
        console.print(
            f"[red]{workers} workers x (pool_size {settings.db.pool_size} + write_pool_size "
            f"{settings.db.write_pool_size}) = {workers * per_worker} connections, but the server "
            f"allows {limit} (keep under {budget}). Lower FASTPOST_DB__POOL_SIZE or "
            "FASTPOST_DB__WRITE_POOL_SIZE, or put PgBouncer in front.[/red]"
        )
        raise typer.Exit(2)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from fastpost.db import Database
    from fastpost.migrations import current_revision, upgrade

    settings = _settings()
    if settings.db.is_sqlite:
        from sqlalchemy.engine import make_url

        path = make_url(settings.db.url).database
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)

    async def run() -> str | None:
        db = Database(settings.db)
        try:
            await upgrade(db.write_engine, settings.db, revision)
            return await current_revision(db.write_engine)
        finally:
            await db.dispose()

    console.print(f"database at revision {asyncio.run(run())}")


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from fastpost.db import Database
    from fastpost.migrations import current_revision

    settings = _settings()

    async def run() -> str | None:
        db = Database(settings.db)
        try:
            return await current_revision(db.write_engine)
        finally:
            await db.dispose()

    console.print(asyncio.run(run()) or "not migrated")


@db_app.command("top")
def db_top(
    limit: Annotated[int, typer.Option(min=1, help="Statements to list.")] = 20,
    order_by: Annotated[
        str, typer.Option("--order", help="Rank by: total (time), calls, mean (time) or rows.")
    ] = "total",
) -> None:
    """The statements the database spends its time on: pg_stat_statements on PostgreSQL,
    fastpost's own statement metrics (those of `fastpost serve`) on SQLite."""
    # Imported here, like the rest of the data layer: see _prepare_metrics_dir.
    from fastpost.observability import db_top as top

    if order_by not in top.Order.__members__:
        console.print(f"[red]--order is one of: {', '.join(top.Order)}[/red]", highlight=False)
        raise typer.Exit(2)
    order = top.Order(order_by)
    settings = _settings()
    try:
        if settings.db.is_sqlite:
            folder = top.metrics_folder(settings, os.environ)
            report = top.top_from_metrics(folder, limit=limit, order=order)
        else:
            report = asyncio.run(
                top.top_from_pg_stat_statements(settings, limit=limit, order=order)
            )
    except top.StatementStatsUnavailable as exc:
        print(exc)
        raise typer.Exit(1) from None
    print(top.render_top(report, width=top.terminal_width()))


@db_app.command("explain")
def db_explain(
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. GET.")],
    path: Annotated[str, typer.Argument(help="Path with query string, e.g. '/posts/42'.")],
    user: Annotated[
        str | None, typer.Option("--user", help="Send a bearer token for this username.")
    ] = None,
    json_body: Annotated[str | None, typer.Option("--json", help="JSON request body.")] = None,
) -> None:
    """Send one request in process (cache off) and print the plan of every statement it
    sent, the slowest node marked >>. Changes nothing: writes are rolled back."""
    from fastpost.observability import db_explain as explain
    from fastpost.observability.db_top import terminal_width

    settings = _settings()
    try:
        report = asyncio.run(
            explain.explain_request(settings, method, path, username=user, json_body=json_body)
        )
    except explain.ExplainRefused as exc:
        console.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(1) from None
    print(explain.render_explain(report, width=terminal_width()))


async def _database_of_user(settings: Settings, username: str) -> DatabaseSettings | None:
    """The database that holds USERNAME's account: in sharded mode, the one the directory
    names (None: nobody has that name)."""
    if not settings.db.shards:
        return settings.db
    from fastpost.shards.setup import user_database_settings

    return await user_database_settings(settings.db, username)


def _set_admin(username: str, is_admin: bool) -> None:
    from sqlalchemy import update

    from fastpost.db import Database
    from fastpost.users.models import User

    settings = _settings()

    async def run() -> int:
        database = await _database_of_user(settings, username)
        if database is None:
            return 0
        db = Database(database)
        try:
            async with db.transaction() as session:
                result = await session.execute(
                    update(User).where(User.username == username).values(is_admin=is_admin)
                )
                return int(getattr(result, "rowcount", 0))
        finally:
            await db.dispose()

    if asyncio.run(run()) == 0:
        console.print(f"[red]no user named {username!r}[/red]")
        raise typer.Exit(1)
    console.print(f"{username} is {'now' if is_admin else 'no longer'} an admin")


@admin_app.command("grant")
def admin_grant(username: Annotated[str, typer.Argument(help="The user's username.")]) -> None:
    """Make USERNAME an admin."""
    _set_admin(username, True)


@admin_app.command("revoke")
def admin_revoke(username: Annotated[str, typer.Argument(help="The user's username.")]) -> None:
    """Make USERNAME an ordinary user again."""
    _set_admin(username, False)


def _set_active(username: str, active: bool) -> None:
    from fastpost.cache import build_cache
    from fastpost.db import Database
    from fastpost.users.service import set_active

    settings = _settings()

    async def run() -> int | None:
        database = await _database_of_user(settings, username)
        if database is None:
            return None
        db = Database(database)
        # With Redis, the running workers drop the account's entries at once (pub/sub);
        # without, within the cache's local TTL.
        cache = build_cache(settings)
        await cache.start()
        try:
            return await set_active(db=db, cache=cache, username=username, active=active)
        finally:
            await cache.close()
            await db.dispose()

    if asyncio.run(run()) is None:
        console.print(f"[red]no user named {username!r}[/red]")
        raise typer.Exit(1)
    state = "active again" if active else "deactivated: its tokens are refused"
    console.print(f"{username} is {state}")


@admin_app.command("deactivate")
def admin_deactivate(username: Annotated[str, typer.Argument(help="The user's username.")]) -> None:
    """Close USERNAME's account: no login, and its tokens refused on every route."""
    _set_active(username, False)


@admin_app.command("activate")
def admin_activate(username: Annotated[str, typer.Argument(help="The user's username.")]) -> None:
    """Reopen USERNAME's account."""
    _set_active(username, True)


@app.command()
def seed(
    users: Annotated[int, typer.Option(min=0, help="Users to create.")] = 300,
    posts: Annotated[int, typer.Option(min=0, help="Posts to create.")] = 3000,
    follows: Annotated[int, typer.Option(min=0, help="Follows to create.")] = 3000,
    likes: Annotated[int, typer.Option(min=0, help="Likes to create.")] = 10000,
    tags: Annotated[
        int, typer.Option(min=0, help="Distinct tags; each post gets 0 to 3 of them.")
    ] = 20,
    random_seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed gives the same data.")
    ] = 42,
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing when the database has users.")
    ] = False,
) -> None:
    """Load generated users, posts, follows and likes in bulk (one transaction).

    The first user is `testuser` (password `testpass`); every other has password `password`.
    """
    from fastpost.seed import SeedPlan, database_is_empty
    from fastpost.seed import seed as run_seed

    settings = _settings()
    if if_empty and not asyncio.run(database_is_empty(settings)):
        console.print("database already has data; not seeding")
        return
    plan = SeedPlan(
        users=users, posts=posts, follows=follows, likes=likes, tags=tags, seed=random_seed
    )
    # likes and follows land on these unless they can't: no more than one like per user
    # and post, one follow per ordered pair of users.
    totals = {"users": users, "posts": posts, "likes": likes, "follows": follows}
    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        TextColumn("{task.completed:>10,}{task.fields[of]:<11}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        tasks = {
            name: bar.add_task(name, total=total, of=f"/{total:,}")
            for name, total in totals.items()
        }
        # Each post draws 0 to 3 tags: no exact total in advance.
        tasks["post_tags"] = bar.add_task("tags", total=None, of="")
        # PostgreSQL rebuilds indexes after a large load: counted as they finish, with no
        # total known in advance (the bar pulses meanwhile).
        tasks["indexes"] = bar.add_task("indexes", total=None, of="", visible=False)
        done = dict.fromkeys(tasks, 0)

        def progress(phase: str, rows: int) -> None:
            done[phase] += rows
            bar.update(tasks[phase], advance=rows, visible=True)

        report = asyncio.run(run_seed(settings, plan, progress))
        bar.update(tasks["indexes"], total=done["indexes"])
        bar.update(tasks["post_tags"], total=done["post_tags"])
    table = Table(title=f"seeded in {report.seconds:.1f} s")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("seconds", justify="right")
    for name, seconds in report.phases.items():
        count = report.counts.get(name)
        table.add_row(name, "" if count is None else f"{count:,}", f"{seconds:.1f}")
    table.add_row("total", f"{report.rows:,}", f"{report.seconds:.1f}")
    console.print(table)
    console.print(f"{report.rows_per_second:,.0f} rows/s")


@app.command()
def profile(
    method: Annotated[str, typer.Argument(help="HTTP method, e.g. GET.")],
    path: Annotated[str, typer.Argument(help="Path with query string, e.g. '/posts/?limit=20'.")],
    as_user: Annotated[
        int | None, typer.Option("--as-user", help="Send a bearer token for this user id.")
    ] = None,
    json_body: Annotated[str | None, typer.Option("--json", help="JSON request body.")] = None,
    speedscope: Annotated[
        str | None, typer.Option(help="Write a speedscope profile (pyinstrument) to this file.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Functions to list.")] = 25,
    cached: Annotated[
        bool,
        typer.Option(
            "--cached",
            help="Keep the cache on: after the warm-up the request is then a cache hit.",
        ),
    ] = False,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory",
            help="Memory instead of time (tracemalloc): the lines that allocated what the "
            "request held as it answered, and what it left.",
        ),
    ] = False,
    memray: Annotated[
        Path | None,
        typer.Option(help="Memory with memray, if installed: write its capture to this file."),
    ] = None,
    growth: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Memory-growth check: serve the request N thousand times after a warm-up; "
            "exit 1 if memory grows by more than --max-growth bytes per request.",
        ),
    ] = None,
    max_growth: Annotated[
        float | None,
        typer.Option(min=0, help="The growth check's threshold, bytes per request (64)."),
    ] = None,
) -> None:
    """Run one request in-process under cProfile and print the top functions, fastpost's
    own first (after one unprofiled warm-up request; the cache is off unless --cached).
    --memory, --memray FILE: its allocations instead; --growth N: the memory-growth check."""
    import json

    from fastpost.app import create_app
    from fastpost.observability.profiling import profile_request

    settings = _settings()
    if not cached:
        # The warm-up would fill the cache and the profile would show a hit: the path
        # worth profiling is the one that does the work.
        settings = settings.model_copy(
            update={"cache": settings.cache.model_copy(update={"enabled": False})}
        )
    app_ = create_app(settings)
    headers = {}
    if as_user is not None:
        headers["Authorization"] = f"Bearer {app_.state.tokens.issue(as_user).access_token}"
    if memory or memray is not None or growth is not None:
        from fastpost.observability.memory import memory_command

        raise typer.Exit(
            memory_command(
                app_,
                method.upper(),
                path,
                headers=headers,
                json_body=json.loads(json_body) if json_body else None,
                memray_out=memray,
                growth_thousands=growth,
                max_bytes_per_request=max_growth,
                top=top,
            )
        )
    status, report = asyncio.run(
        profile_request(
            app_,
            method.upper(),
            path,
            headers=headers,
            json_body=json.loads(json_body) if json_body else None,
            speedscope=speedscope is not None,
            top=top,
        )
    )
    console.print(
        f"{method.upper()} {path} -> {status} "
        f"({'cache on' if cached else 'cache off: the uncached path; --cached for a hit'})"
    )
    if settings.db.is_sqlite and speedscope is None:
        console.print(
            "SQLite runs each query in aiosqlite's thread, which cProfile does not follow: "
            "the database's share shows as waiting. For it: --speedscope, or py-spy."
        )
    if speedscope is not None:
        Path(speedscope).write_text(report)
        console.print(f"speedscope profile written to {speedscope} (open it at speedscope.app)")
    else:
        print(report)


from fastpost.lab.command import lab  # noqa: E402

app.command()(lab)

from fastpost.bench.command import bench  # noqa: E402

app.command()(bench)

from fastpost.cluster.command import cluster_app  # noqa: E402

app.add_typer(cluster_app, name="cluster")

from fastpost.shards.command import shards_app  # noqa: E402

app.add_typer(shards_app, name="shards")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
