"""What every script here does around its measurement: wrk present, servers stopped on
Ctrl-C or SIGTERM, a scratch folder, the results printed and optionally saved as JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fastpost.bench.servers import stop_on_signals
from fastpost.bench.wrk import ensure_wrk

Results = dict[str, Any]


def run_script(
    args: argparse.Namespace,
    benchmark: Callable[[argparse.Namespace, Path], Results],
    print_results: Callable[[Results], None],
    *,
    name: str,
    console: Console,
    needs_wrk: bool = True,
    failed: Callable[[Results], bool] = lambda results: False,
) -> int:
    """Run `benchmark` in a scratch folder, print its results, write them to `args.json`;
    return the process's exit status (1 when `failed` says the results are a failure)."""
    if needs_wrk:
        ensure_wrk(console)
    try:
        with stop_on_signals(), tempfile.TemporaryDirectory(prefix=f"{name}_") as tmp:
            results = benchmark(args, Path(tmp))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: servers stopped[/yellow]")
        return 130
    except RuntimeError as exc:
        console.print(f"[red]benchmark failed:[/red] {exc}", highlight=False)
        return 1
    print_results(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"results written to {args.json}")
    return 1 if failed(results) else 0
