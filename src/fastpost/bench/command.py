"""`fastpost bench`: serve fastpost, load it, and report against the SLO and a baseline.

In order: prepare the database (create, migrate, seed; or reuse with --keep-db), start
`fastpost serve` pinned to the server cores, log users in and build the scenario's request
list from the seeded ids, check every request of it answers 2xx, start the Starlette
baseline (a constant body of the scenario's median response size, same uvicorn flags,
workers and cores), warm both up, then:
1. wrk on fastpost, then on the baseline (throughput; ratio to the baseline);
2. the fixed-rate generator at --rate (latency from intended send times, server CPU at
   that normal load, the latency plots);
3. with --capacity, the step search for the highest rate within --p99-bound, on fastpost
   and then on the baseline (the same steps), and the ratio of the two capacities.
Everything started is stopped on the way out, also on Ctrl-C or SIGTERM.

Exit status: 0 after a run (whatever its verdicts), 1 when the run itself failed, and with
--fail-on-target 3 when any target failed (for CI; the failed targets are printed).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fastpost.bench import scenarios, targets
from fastpost.bench.database import DEFAULT_ADMIN_URL
from fastpost.extras import require_extra
from fastpost.messages import LANGUAGES, LangOption, resolve_language, text

console = Console() if sys.stdout.isatty() else Console(width=130)
REDIS_URL = "redis://127.0.0.1:6379/13"
DB_NAME = "fastpost_bench_cli"
# `--fail-on-target` exits with this when a target failed: not 1, which says the run broke.
TARGET_FAILED_EXIT = 3


class Backend(StrEnum):
    sqlite = "sqlite"
    postgres = "postgres"


@dataclass
class Config:
    scenario: str
    workers: int
    database: str
    redis: bool
    cache: bool
    users: int
    posts: int
    follows: int
    likes: int
    login_users: int
    duration: float
    warmup: float
    connections: int
    threads: int
    rate: float
    fixed_duration: float
    fixed_connections: int
    capacity: bool
    p99_bound: float
    start_rate: float
    step_factor: float
    step_duration: float
    max_rate: float
    baseline: bool
    server_cpus: list[int] | None
    client_cpus: list[int] | None
    database_url: str = DEFAULT_ADMIN_URL
    db_name: str = DB_NAME
    redis_url: str = REDIS_URL
    keep_db: bool = False
    sqlite_path: str | None = None
    targets: list[str] = field(default_factory=list)


def _cores(
    no_pin: bool, server_cpus: str | None, client_cpu: int | None
) -> tuple[list[int] | None, list[int] | None]:
    if no_pin:
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        console.print("[yellow]fewer than 2 cores or no taskset: not pinning[/yellow]")
        return None, None
    client = [client_cpu if client_cpu is not None else cores[-1]]
    server = (
        [int(c) for c in server_cpus.split(",")]
        if server_cpus
        else [c for c in cores if c not in client]
    )
    if set(server) & set(client) or not set(server) | set(client) <= set(cores):
        raise typer.BadParameter(f"need distinct server and client cores among {cores}")
    return server, client


def bench(
    scenario: Annotated[
        str, typer.Option(help=f"What to send: {scenarios.SCENARIO_HELP}.")
    ] = "mixed",
    workers: Annotated[int, typer.Option(min=1, help="fastpost (and baseline) workers.")] = 1,
    database: Annotated[Backend, typer.Option(help="Database backend.")] = Backend.sqlite,
    database_url: Annotated[
        str, typer.Option(help="PostgreSQL admin URL; a scratch database is created through it.")
    ] = DEFAULT_ADMIN_URL,
    db_name: Annotated[str, typer.Option(help="PostgreSQL scratch database name.")] = DB_NAME,
    sqlite_path: Annotated[
        str | None, typer.Option(help="SQLite file (default: a temporary one).")
    ] = None,
    redis: Annotated[bool, typer.Option(help="Cache tier 2 in Redis.")] = False,
    redis_url: Annotated[str, typer.Option(help="Redis URL (flushed first).")] = REDIS_URL,
    cache: Annotated[bool, typer.Option(help="fastpost's cache on.")] = True,
    users: Annotated[int, typer.Option(min=1, help="Users to seed.")] = 1000,
    posts: Annotated[int, typer.Option(min=1, help="Posts to seed (1000000 works).")] = 20000,
    follows: Annotated[int, typer.Option(min=0, help="Follows to seed.")] = 10000,
    likes: Annotated[int, typer.Option(min=0, help="Likes to seed.")] = 20000,
    keep_db: Annotated[
        bool, typer.Option(help="Keep the database, and reuse one seeded with the same sizes.")
    ] = False,
    login_users: Annotated[int, typer.Option(min=1, help="Users logged in for the mix.")] = 20,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds of each wrk run.")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of warm-up per server.")] = 3.0,
    connections: Annotated[int, typer.Option(min=1, help="wrk connections.")] = 64,
    threads: Annotated[int, typer.Option(min=1, help="wrk threads.")] = 1,
    rate: Annotated[
        float, typer.Option(min=0.1, help="Normal load: the fixed rate, requests/s.")
    ] = 200.0,
    fixed_duration: Annotated[
        float, typer.Option(min=0.5, help="Seconds of the fixed-rate run.")
    ] = 10.0,
    fixed_connections: Annotated[
        int, typer.Option(min=1, help="Connections of the fixed-rate generator.")
    ] = 64,
    capacity: Annotated[
        bool, typer.Option("--capacity", help="Step the rate up to find the capacity.")
    ] = False,
    p99_bound: Annotated[float, typer.Option(help="Capacity: the p99 bound, ms.")] = 200.0,
    start_rate: Annotated[float, typer.Option(min=1, help="Capacity: first rate.")] = 100.0,
    step_factor: Annotated[float, typer.Option(min=1.05, help="Capacity: rate growth.")] = 1.5,
    step_duration: Annotated[float, typer.Option(min=0.5, help="Capacity: s per step.")] = 5.0,
    max_rate: Annotated[float, typer.Option(help="Capacity: highest rate tried.")] = 50_000.0,
    baseline: Annotated[bool, typer.Option(help="Measure the Starlette baseline too.")] = True,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Our target NAME=VALUE (p50_ms, p95_ms, p99_ms, rps, server_cpu, "
            f"error_rate); defaults: {', '.join(f'{k}={v:g}' for k, v in targets.OURS.items())}."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default reports/bench-<timestamp>).")
    ] = None,
    no_pin: Annotated[bool, typer.Option("--no-pin", help="Do not pin with taskset.")] = False,
    server_cpus: Annotated[
        str | None,
        typer.Option(help="Cores for the server, e.g. 0 or 0,1 (default: all but the last)."),
    ] = None,
    client_cpu: Annotated[
        int | None, typer.Option(help="Core for the load generator (default: the last).")
    ] = None,
    fail_on_target: Annotated[
        bool,
        typer.Option(
            "--fail-on-target",
            help=f"Exit with status {TARGET_FAILED_EXIT} when any target fails (for CI).",
        ),
    ] = False,
    lang: LangOption = None,
) -> None:
    """Load fastpost with wrk and a fixed-rate generator; report against the SLO targets."""
    try:
        scenarios.parse_route(scenario)
        targets.parse_targets(target or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if lang is not None and lang not in LANGUAGES:
        raise typer.BadParameter("en or es", param_hint="--lang")
    language = resolve_language(lang)
    require_extra("bench", "bench", console)
    server, client = _cores(no_pin, server_cpus, client_cpu)
    config = Config(
        scenario=scenario,
        workers=workers,
        database=database.value,
        redis=redis,
        cache=cache,
        users=users,
        posts=posts,
        follows=follows,
        likes=likes,
        login_users=login_users,
        duration=duration,
        warmup=warmup,
        connections=connections,
        threads=threads,
        rate=rate,
        fixed_duration=fixed_duration,
        fixed_connections=fixed_connections,
        capacity=capacity,
        p99_bound=p99_bound,
        start_rate=start_rate,
        step_factor=step_factor,
        step_duration=step_duration,
        max_rate=max_rate,
        baseline=baseline,
        server_cpus=server,
        client_cpus=client,
        database_url=database_url,
        db_name=db_name,
        redis_url=redis_url,
        keep_db=keep_db,
        sqlite_path=sqlite_path,
        targets=target or [],
    )
    folder = out or Path("reports") / f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    # Imported here: the run needs the bench extra (psutil, matplotlib, httpx), and the
    # `fastpost` command must start without it.
    from fastpost.bench import report
    from fastpost.bench.run import run_bench

    try:
        result = run_bench(config, folder)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: everything started was stopped[/yellow]")
        raise typer.Exit(130) from None
    except RuntimeError as exc:
        console.print(f"[red]bench failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    report.print_report(result, console, language)
    console.print(text("bench.report_written", language, folder=folder), highlight=False)
    # Last, whatever the exit status: the verdict is what a reader looks for.
    report.print_verdict(
        result, console, language, fail_exit_code=TARGET_FAILED_EXIT if fail_on_target else None
    )
    if fail_on_target and report.failures(result):
        raise typer.Exit(TARGET_FAILED_EXIT)
