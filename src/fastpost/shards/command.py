"""`fastpost shards`: prepare the databases of sharded mode and show what each holds."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fastpost.settings import Settings

shards_app = typer.Typer(
    help="Sharded mode (FASTPOST_DB__SHARDS): the shard map and what each database holds.",
    no_args_is_help=True,
)
console = Console()


def _shard_settings() -> Settings:
    try:
        settings = Settings()
    except ValueError as exc:
        console.print(f"[red]Configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    if not settings.db.shards:
        console.print(
            "[red]FASTPOST_DB__SHARDS is empty:[/red] give the databases as a JSON list, "
            """FASTPOST_DB__SHARDS='["postgresql+asyncpg://.../a", "postgresql+asyncpg://.../b"]'"""
        )
        raise typer.Exit(2)
    return settings


@shards_app.command("init")
def init() -> None:
    """Migrate every database, drop the foreign keys across shards, write the shard map."""
    from fastpost.shards.setup import init_shards

    settings = _shard_settings()
    shard_map = asyncio.run(init_shards(settings.db))
    for index in range(len(settings.db.shards)):
        logical = shard_map.logical_shards_of(index)
        console.print(f"database {index}: {len(logical)} logical shards {logical}")


@shards_app.command("status")
def status() -> None:
    """Per database: its logical shards, rows and bytes per table, rows per logical shard."""
    from fastpost.shards.setup import shard_status

    settings = _shard_settings()
    for logical, state in asyncio.run(_moves_in_progress(settings)):
        console.print(f"[yellow]logical shard {logical}: move in progress ({state})[/yellow]")
    for found in asyncio.run(shard_status(settings.db)):
        console.print(
            f"[bold]database {found.index}[/bold] {found.url}: logical shards "
            f"{found.logical_shards}"
        )
        table = Table("table", "rows", "bytes")
        for t in found.tables:
            table.add_row(t.name, str(t.rows), str(t.bytes))
        console.print(table)
        if found.by_logical:
            per = Table("table", "logical shard", "rows")
            for (name, logical), rows in sorted(found.by_logical.items()):
                per.add_row(name, str(logical), str(rows))
            console.print(per)


async def _moves_in_progress(settings: Settings) -> list[tuple[int, str]]:
    from fastpost.db import Database
    from fastpost.shards.shard_map import READY, load_shard_map

    directory = Database(settings.db.for_shard(settings.db.shards[0]))
    try:
        shard_map = await load_shard_map(directory, len(settings.db.shards))
    finally:
        await directory.dispose()
    return [(n, state) for n, state in enumerate(shard_map.states) if state != READY]


def _say(line: str) -> None:
    typer.echo(line)  # as it is: one line per step, never wrapped


@shards_app.command("move")
def move(
    logical: Annotated[int, typer.Argument(min=0, max=31, help="The logical shard to move.")],
    to: Annotated[int, typer.Option("--to", min=0, help="Index of the target database.")],
) -> None:
    """Move one logical shard to another database while the site serves (see README)."""
    from fastpost.shards.move import MoveFailed, move_shard

    settings = _shard_settings()
    try:
        asyncio.run(move_shard(settings.db, logical, to, redis_url=settings.redis_url, say=_say))
    except (MoveFailed, TimeoutError) as exc:
        console.print(f"[red]Move failed:[/red] {exc}")
        raise typer.Exit(1) from None


@shards_app.command("rebalance")
def rebalance() -> None:
    """Move logical shards, one at a time, until each database holds an equal share."""
    from fastpost.shards.move import MoveFailed
    from fastpost.shards.move import rebalance as run_rebalance

    settings = _shard_settings()
    try:
        asyncio.run(run_rebalance(settings.db, redis_url=settings.redis_url, say=_say))
    except (MoveFailed, TimeoutError) as exc:
        console.print(f"[red]Rebalance stopped:[/red] {exc}")
        raise typer.Exit(1) from None
