"""The report of a bench run: a Rich table, report.json and report.md with the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _limit(verdict: dict[str, Any]) -> str:
    return f"{verdict['comparison']} {verdict['limit']:g}"


def _measured(verdict: dict[str, Any]) -> str:
    value = verdict["measured"]
    if verdict["name"] in ("server_cpu", "error_rate"):
        return f"{value:.2%}"
    return f"{value:,.1f}"


def _rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    throughput = report["throughput"]
    for name in ("fastpost", "baseline"):
        run = throughput.get(name)
        if run is None:
            continue
        rows.append(
            (
                f"wrk {name}",
                f"{run['rps']:,.0f}",
                _ratio(run.get("vs_baseline")),
                _ms(run["p50_ms"]),
                _ms(run["p95_ms"]),
                _ms(run["p99_ms"]),
                _ms(run["max_ms"]),
                f"{run['errors']:,} ({_pct(run['error_rate'])})",
                f"{run['server_cpu']:.0%}",
                f"{run['wrk_cpu']:.0%}" + (" INVALID" if not run["valid"] else ""),
            )
        )
    fixed = report["fixed_rate"]
    latency = fixed["latency"]
    rows.append(
        (
            f"fixed {fixed['rate']:g}/s",
            f"{fixed['achieved_rps']:,.0f}",
            "-",  # an offered rate, not a ceiling: no ratio
            _ms(latency["p50_ms"]),
            _ms(latency["p95_ms"]),
            _ms(latency["p99_ms"]),
            _ms(latency["max_ms"]),
            f"{latency['errors']:,} ({_pct(latency['error_rate'])})",
            f"{fixed['server_cpu']:.0%}",
            f"{fixed['generator_cpu']:.0%}" + (" INVALID" if not fixed["valid"] else ""),
        )
    )
    return rows


HEADERS = (
    "run",
    "req/s",
    "vs baseline",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "errors",
    "server CPU",
    "generator CPU",
)


def print_report(report: dict[str, Any], console: Console) -> None:
    """Print the run's figures, per-worker usage, /metrics deltas and the verdicts."""
    config = report["config"]
    table = Table(
        title=(
            f"fastpost bench: {config['scenario']}, {config['workers']} worker(s), "
            f"{config['database']}{' + Redis' if config['redis'] else ''}"
        ),
        caption=report["method"],
    )
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "run" else "right")
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    for worker in report["server"]["workers"]:
        console.print(
            f"worker {worker['pid']}: {worker['cpu']:.0%} of a core, {worker['rss_mb']:.0f} MB RSS",
            highlight=False,
        )
    metrics = report["metrics"]
    if metrics:
        console.print(
            f"/metrics over the wrk run: {metrics['queries']:,.0f} queries "
            f"({metrics['queries_per_request']:.2f}/request, "
            f"{metrics['query_ms_per_request']:.2f} ms/request), cache "
            f"{metrics['cache_hits']:,.0f} hits / {metrics['cache_misses']:,.0f} misses "
            f"({metrics['cache_hit_rate']:.0%} hits)",
            highlight=False,
        )
    capacity = report.get("capacity")
    if capacity:
        found = capacity["sustained_rps"]
        console.print(
            f"capacity at p99 <= {capacity['bound_ms']:g} ms: "
            + (f"[bold]{found:,.0f} req/s[/bold]" if found else "below the first step")
            + f" ({_ratio(capacity.get('vs_baseline'))} of the baseline's wrk req/s); "
            f"stopped: {capacity['stopped_because']}",
            highlight=False,
        )
    for group, title in (("course", "course targets"), ("ours", "our targets")):
        verdicts = Table(title=title)
        for header in ("target", "limit", "measured", "verdict"):
            verdicts.add_column(header)
        for verdict in report["verdict"][group]:
            verdicts.add_row(
                verdict["what"],
                _limit(verdict),
                _measured(verdict),
                "[green]PASS[/green]" if verdict["passed"] else "[red]FAIL[/red]",
            )
        console.print(verdicts)
    for reason in report["invalid_reasons"]:
        console.print(f"[red]INVALID:[/red] {reason}", highlight=False)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write the report as JSON."""
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def write_markdown(report: dict[str, Any], path: Path) -> Path:
    """Write report.md: the table, the verdicts and the plots, next to the PNG files."""
    config = report["config"]
    lines = [
        f"# fastpost bench: {config['scenario']}",
        "",
        f"{report['when']}, revision {report['revision'] or '?'}, {report['machine']['cpu']} "
        f"({report['machine']['cores']} cores). {config['workers']} worker(s), "
        f"{config['database']}{' + Redis' if config['redis'] else ''}, "
        f"{config['users']:,} users and {config['posts']:,} posts.",
        "",
        report["method"],
        "",
    ]
    if not report["valid"]:
        lines += ["**INVALID:** " + "; ".join(report["invalid_reasons"]), ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    lines.append("")
    for worker in report["server"]["workers"]:
        lines.append(
            f"- worker {worker['pid']}: {worker['cpu']:.0%} of a core, "
            f"{worker['rss_mb']:.0f} MB RSS"
        )
    metrics = report["metrics"]
    if metrics:
        lines.append(
            f"- /metrics over the wrk run: {metrics['queries']:,.0f} queries "
            f"({metrics['queries_per_request']:.2f} per request, "
            f"{metrics['query_ms_per_request']:.2f} ms per request); cache "
            f"{metrics['cache_hits']:,.0f} hits, {metrics['cache_misses']:,.0f} misses"
        )
    capacity = report.get("capacity")
    if capacity:
        lines.append(
            f"- capacity at p99 <= {capacity['bound_ms']:g} ms: "
            f"{_ms(capacity['sustained_rps'])} req/s; stopped: {capacity['stopped_because']}"
        )
    lines.append("")
    for group, title in (("course", "Course targets"), ("ours", "Our targets")):
        lines += [f"## {title}", "", "| target | limit | measured | verdict |", "|---|---|---|---|"]
        for verdict in report["verdict"][group]:
            mark = "PASS" if verdict["passed"] else "**FAIL**"
            lines.append(
                f"| {verdict['what']} | {_limit(verdict)} | {_measured(verdict)} | {mark} |"
            )
        lines.append("")
    lines += ["## Plots", ""]
    for name, file in report["plots"].items():
        lines += [f"![{name.replace('_', ' ')}]({file})", ""]
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    path.write_text("\n".join(lines) + "\n")
    return path
