"""`fastpost shards`: prepare the databases of sharded mode and show what each holds."""

from __future__ import annotations

import asyncio

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
