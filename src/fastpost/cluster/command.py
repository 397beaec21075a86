"""`fastpost cluster up | status | down`: the course's topology on one machine.

nginx in front of K fastpost instances, a PostgreSQL primary with R streaming replicas, and
Redis, all on loopback, from the machine's own binaries, everything under one state folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fastpost.cluster import nginx, processes
from fastpost.cluster.lifecycle import Cluster, PartFailed, PartStatus, missing_binaries
from fastpost.cluster.state import ClusterState
from fastpost.cluster.topology import (
    DEFAULT_INSTANCES,
    DEFAULT_PORT,
    DEFAULT_REPLICAS,
    plan,
)

cluster_app = typer.Typer(
    help="A local cluster: nginx, fastpost instances, PostgreSQL primary and replicas (or "
    "shard servers), Redis.",
    no_args_is_help=True,
)
console = Console()
DEFAULT_STATE_DIR = Path("var/cluster")

StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the cluster keeps everything it writes.")
]


@cluster_app.command()
def up(
    instances_: Annotated[
        int, typer.Option("--instances", min=1, help="fastpost instances behind nginx.")
    ] = DEFAULT_INSTANCES,
    replicas: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"PostgreSQL streaming replicas (default: {DEFAULT_REPLICAS}; none with "
            "--shards).",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes per instance.")] = 1,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="nginx's port (0: any free one).")
    ] = DEFAULT_PORT,
    posts: Annotated[int, typer.Option(min=0, help="Posts to seed the primary with.")] = 1000,
    weights: Annotated[
        str | None,
        typer.Option(help="nginx weights of the active instances, e.g. 3,3,2 (default: 1 each)."),
    ] = None,
    backup: Annotated[
        bool | None,
        typer.Option(
            "--backup/--no-backup",
            help="The last instance is nginx's backup (default: with 3 instances or more).",
        ),
    ] = None,
    replica_apply_delay: Annotated[
        str | None,
        typer.Option(help="Replicas replay WAL this late (recovery_min_apply_delay, e.g. 2s)."),
    ] = None,
    redis_cluster: Annotated[
        int,
        typer.Option(
            "--redis-cluster",
            min=0,
            help="A Redis Cluster of this many masters (3 or more) instead of one Redis.",
        ),
    ] = 0,
    shards: Annotated[
        int,
        typer.Option(
            min=0,
            help="Sharded mode over this many databases (2 to 32): the directory on the "
            "primary, the others spread over it and a second PostgreSQL server.",
        ),
    ] = 0,
    free_ports: Annotated[
        bool,
        typer.Option(
            "--free-ports",
            help="Pick free ports for the instances, PostgreSQL and Redis instead of "
            "8001..., 5433... and 6380.",
        ),
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Start the cluster, migrate and seed the primary (or every shard database), wait until
    every part answers."""
    _require_binaries()
    if replicas is None:
        replicas = 0 if shards else DEFAULT_REPLICAS
    try:
        parts = plan(
            instances=instances_,
            replicas=replicas,
            port=port or processes.free_port(),
            weights=_parse_weights(weights),
            backup=backup,
            redis_masters=redis_cluster,
            shards=shards,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if free_ports:
        # Distinct: none is bound until its part starts, so the kernel may offer one twice.
        taken = {p.port for p in parts if p.kind == "nginx"}
        chosen = []
        for p in parts:
            if p.kind != "nginx":
                free = processes.free_port()
                while free in taken:
                    free = processes.free_port()
                taken.add(free)
                p = replace(p, port=free)
            chosen.append(p)
        parts = chosen
    busy = [f"{p.name} :{p.port}" for p in parts if not processes.port_is_free(p.port)]
    cluster = _fresh_cluster(state_dir)
    if busy:
        console.print(
            f"[red]ports in use: {', '.join(busy)}.[/red] Stop what holds them, or pass "
            "--free-ports (and --port 0 for nginx)."
        )
        raise typer.Exit(1)
    try:
        with _progress() as step:
            cluster.up(
                parts,
                workers=workers,
                posts=posts,
                apply_delay=replica_apply_delay,
                shards=shards,
                step=step,
            )
    except Exception as exc:  # whatever failed, what had started must not be left running
        expected = (PartFailed, nginx.NginxConfigError, OSError, RuntimeError)
        reason = str(exc) if isinstance(exc, expected) else f"{type(exc).__name__}: {exc}"
        console.print(f"[red]cluster up failed:[/red] {reason}")
        _stop_all(cluster, why="stopping what had started")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _stop_all(cluster, why="interrupted: stopping what had started")
        raise typer.Exit(130) from None
    _print_table(cluster.status(), title=f"fastpost cluster ({cluster.dir})")
    nginx_port = next(p.port for p in parts if p.kind == "nginx")
    console.print(
        f"API on http://127.0.0.1:{nginx_port}/ (docs at /docs). Logs under {cluster.dir}; "
        f"`fastpost cluster status` shows it, `fastpost cluster down` stops it."
    )


@cluster_app.command()
def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON list of parts instead of a table.")
    ] = False,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Show each part: pid, up or down, replica lag, requests served per instance."""
    state = ClusterState.load(state_dir)
    if state is None:
        if as_json:
            print("[]")
            return
        console.print(f"no cluster in {state_dir}")
        raise typer.Exit(1)
    statuses = Cluster(state_dir).status()
    if as_json:
        print(json.dumps([s.as_json() for s in statuses], indent=2))
    else:
        _print_table(statuses, title=f"fastpost cluster ({state.state_dir})")


@cluster_app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop exactly what `up` started (as its state file lists), even after `up` failed."""
    if ClusterState.load(state_dir) is None:
        console.print(f"no cluster in {state_dir}: nothing to stop")
        return
    _stop_all(Cluster(state_dir), why="stopping")


def _stop_all(cluster: Cluster, *, why: str) -> None:
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
    ) as bar:
        task = bar.add_task(why)
        try:
            stopped = cluster.down(
                lambda started: bar.update(task, description=f"{why}: {started.name}")
            )
        except PartFailed as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    names = ", ".join(s.name for s in stopped) or "nothing"
    console.print(f"stopped {names}; logs and data stay in {cluster.dir}")


def _fresh_cluster(state_dir: Path) -> Cluster:
    """Return a Cluster on `state_dir` ready to start, or exit when that would be unsafe."""
    previous = ClusterState.load(state_dir)
    if previous is not None:
        cluster = Cluster(state_dir)
        running = [s.name for s in cluster.status() if s.up or s.pid is not None]
        if running:
            console.print(
                f"[red]a cluster runs from {state_dir} ({', '.join(running)}).[/red] "
                f"Stop it first: fastpost cluster down --state-dir {state_dir}"
            )
            raise typer.Exit(1)
        cluster.remove_previous()
        return cluster
    if state_dir.exists() and any(child.name != "secret_key" for child in state_dir.iterdir()):
        # Not ours: never start (and later delete folders) in a folder someone else uses.
        console.print(f"[red]{state_dir} is not empty and holds no cluster state.[/red]")
        raise typer.Exit(1)
    return Cluster(state_dir)


def _require_binaries() -> None:
    problems = missing_binaries()
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        raise typer.Exit(1)


def _parse_weights(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(w) for w in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"--weights: whole numbers separated by commas, not {text!r}"
        ) from None


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str], contextlib.AbstractContextManager[None]]]:
    """Yield `step(description)`: a context that shows a spinner until its work is done."""
    with Progress(
        SpinnerColumn(finished_text="[green]done[/green]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:

        @contextlib.contextmanager
        def step(description: str) -> Iterator[None]:
            task = bar.add_task(description, total=1)
            try:
                yield
            except BaseException:
                bar.update(task, description=f"{description} [red]failed[/red]")
                bar.stop_task(task)
                raise
            bar.update(task, completed=1)

        yield step


def _print_table(statuses: Sequence[PartStatus], *, title: str) -> None:
    table = Table(title=title)
    for column in ("part", "kind", "address", "pid", "up", "figures"):
        table.add_column(column, justify="right" if column == "pid" else "left")
    for s in statuses:
        figures = []
        if s.kind == "instance":
            figures.append("backup" if s.backup else f"weight {s.weight}")
            if s.requests is not None:
                figures.append(f"{s.requests:,} requests")
        if s.lag_seconds is not None:
            figures.append(f"lag {s.lag_seconds:.2f} s")
        if s.shard_databases:
            figures.append("shards: " + ", ".join(s.shard_databases))
        table.add_row(
            s.name,
            s.kind,
            f"127.0.0.1:{s.port}",
            "" if s.pid is None else str(s.pid),
            "[green]up[/green]" if s.up else "[red]down[/red]",
            ", ".join(figures),
        )
    console.print(table)
