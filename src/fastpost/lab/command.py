"""`fastpost lab`: run the anti-pattern experiments and print (and save) what they measured."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fastpost.extras import require_extra
from fastpost.lab.catalog import EXPERIMENTS, select_experiments
from fastpost.messages import LANGUAGES, LangOption, resolve_language, text

# Rich assumes 80 columns when output goes to a file or a pipe: too narrow for the table.
console = Console() if sys.stdout.isatty() else Console(width=140)
_LIST = "Comma-separated integers."


def _ints(value: str, option: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part.replace("_", "")) for part in value.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a list of integers", param_hint=option
        ) from None
    if not numbers or min(numbers) < 1:
        raise typer.BadParameter("give positive integers, e.g. 1,100,10000", param_hint=option)
    return numbers


_NAMES = ", ".join(f"{e.number} {e.name}" for e in EXPERIMENTS)


def lab(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="SQLite file or PostgreSQL server URL (the lab makes a scratch database "
            "fastpost_lab_* there). Default: a fresh temporary SQLite file."
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Redis for the cache's tier 2 (use a db of its own, e.g. /12)."),
    ] = None,
    only: Annotated[
        str | None, typer.Option(help=f"Experiments to run, by number or name: {_NAMES}.")
    ] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Repeats per measurement (median).")] = 3,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every figure as JSON to this file.")
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep/--no-keep",
            help="Keep the database, and reuse one seeded with the same sizes next time.",
        ),
    ] = False,
    users: Annotated[int, typer.Option(min=1, help="Users to seed.")] = 1000,
    posts: Annotated[int, typer.Option(min=1, help="Posts to seed.")] = 30_000,
    follows: Annotated[int, typer.Option(min=0, help="Follows to seed.")] = 10_000,
    likes: Annotated[int, typer.Option(min=0, help="Likes to seed.")] = 30_000,
    random_seed: Annotated[int, typer.Option("--seed", help="Seed of the generated data.")] = 42,
    n_plus_one_posts: Annotated[
        int, typer.Option(min=1, help="1: posts loaded with their authors.")
    ] = 100,
    overview_users: Annotated[
        int, typer.Option(min=1, help="2: users whose overview is read.")
    ] = 20,
    list_sizes: Annotated[str, typer.Option(help=f"3: container sizes. {_LIST}")] = (
        "100,10000,1000000"
    ),
    pages: Annotated[str, typer.Option(help=f"4: page numbers. {_LIST}")] = "1,100,1000,10000",
    page_size: Annotated[int, typer.Option(min=1, help="4: posts per page.")] = 20,
    index_lookups: Annotated[
        int, typer.Option(min=1, help="5: lookups timed with and without the index.")
    ] = 50,
    cache_requests: Annotated[
        int, typer.Option(min=1, help="6: post detail requests per variant.")
    ] = 200,
    hashes: Annotated[int, typer.Option(min=1, help="7: password hashes run at once.")] = 4,
    process_workers: Annotated[int, typer.Option(min=1, help="7: process pool size.")] = 2,
    stream_rows: Annotated[int, typer.Option(min=1, help="8: rows read.")] = 20_000,
    stream_batch: Annotated[
        int, typer.Option(min=1, help="8: rows per page / streamed batch.")
    ] = 1000,
    http_calls: Annotated[int, typer.Option(min=1, help="9: concurrent outbound calls.")] = 20,
    http_delay_ms: Annotated[
        float, typer.Option(min=0, help="9: the slow endpoint's delay.")
    ] = 50.0,
    lang: LangOption = None,
) -> None:
    """Run each performance anti-pattern beside its fix, on seeded data, and measure both."""
    try:
        experiments = select_experiments(only)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only") from None
    if lang is not None and lang not in LANGUAGES:
        raise typer.BadParameter("en or es", param_hint="--lang")
    language = resolve_language(lang)
    require_extra("lab", "bench", console)
    # Here, not at the top: every `fastpost` command imports this module.
    from fastpost.lab.config import LabConfig
    from fastpost.lab.report import print_report, write_json
    from fastpost.lab.runner import run_lab
    from fastpost.seed import SeedPlan

    config = LabConfig(
        database_url=database_url,
        redis_url=redis_url,
        keep=keep,
        plan=SeedPlan(users=users, posts=posts, follows=follows, likes=likes, seed=random_seed),
        repeat=repeat,
        n_plus_one_posts=n_plus_one_posts,
        overview_users=overview_users,
        list_sizes=_ints(list_sizes, "--list-sizes"),
        pages=_ints(pages, "--pages"),
        page_size=page_size,
        index_lookups=index_lookups,
        cache_requests=cache_requests,
        hashes=hashes,
        process_workers=process_workers,
        stream_rows=stream_rows,
        stream_batch=stream_batch,
        http_calls=http_calls,
        http_delay_ms=http_delay_ms,
    )
    with console.status("preparing the database") as status:
        report = asyncio.run(
            run_lab(
                config,
                experiments,
                on_start=lambda e: status.update(f"experiment {e.number}: {e.name}"),
                on_done=lambda r: console.log(f"{r.title}: done in {r.extra['seconds']} s"),
            )
        )
    env = report.environment
    if "dialect" in env:
        how = (
            text("lab.reused", language)
            if env["reused_database"]
            else text("lab.seeded", language, seconds=env["seed_seconds"])
        )
        console.print(text("lab.database", language, database=env["database"], how=how))
    print_report(report, console, language)
    if json_path is not None:
        write_json(report, json_path)
        console.print(text("lab.json_written", language, path=json_path))
