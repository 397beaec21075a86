"""The lab's output: a Rich table with a verdict per experiment, and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fastpost.lab.result import ExperimentResult, LabReport, Measurement

# Details worth a column's worth of space in the terminal; the JSON keeps them all.
_SHOWN_DETAILS = ("lag_p50_ms", "lag_p99_ms", "lag_max_ms", "scan", "served_from")


def _bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} B"


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    if value < 0.01:
        return f"{value * 1000:.2f} µs"
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _ratio(m: Measurement) -> str:
    if m.ratio is None:
        return ""
    return "fix" if m.is_fix else f"{m.ratio:,.1f}x" if m.ratio < 100 else f"{m.ratio:,.0f}x"


def _details(m: Measurement) -> str:
    parts = []
    for key in _SHOWN_DETAILS:
        value = m.details.get(key)
        if value is None:
            continue
        label = key.removesuffix("_ms").replace("_", " ")
        parts.append(f"{label} {value:g} ms" if key.endswith("_ms") else f"{label}: {value}")
    if m.note:
        parts.append(m.note)
    return "; ".join(parts)


def render(report: LabReport) -> Table:
    """One table for the whole run, a section per experiment."""
    env = report.environment
    where = env.get("database", "no database")
    table = Table(title=f"fastpost lab ({where}, median of {env['repeat']})", show_lines=False)
    for name, justify in (
        ("experiment", "left"),
        ("variant", "left"),
        ("size / page", "left"),
        ("queries", "right"),
        ("time ms", "right"),
        ("memory", "right"),
        ("ratio", "right"),
        ("detail", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for result in report.experiments:
        for i, m in enumerate(result.measurements):
            table.add_row(
                f"{result.title.split('.')[0]} {result.key}" if i == 0 else "",
                f"[bold]{m.variant}[/bold]" if m.is_fix else m.variant,
                m.size,
                "" if m.queries is None else str(m.queries),
                _ms(m.time_ms),
                _bytes(m.memory_bytes),
                _ratio(m),
                _details(m),
                end_section=i == len(result.measurements) - 1,
            )
    return table


def print_report(report: LabReport, console: Console) -> None:
    console.print(render(report))
    for result in report.experiments:
        print_verdict(result, console)


def print_verdict(result: ExperimentResult, console: Console) -> None:
    ratio = "" if result.ratio_of == "time" else f" [dim](ratio of {result.ratio_of})[/dim]"
    console.print(f"[bold]{result.title}[/bold]: {result.verdict}{ratio}")
    console.print(f"  [dim]why: {result.why}[/dim]")
    for note in result.notes:
        console.print(f"  [dim]{note}[/dim]")


def to_json(report: LabReport) -> str:
    def default(value: Any) -> Any:
        return str(value)

    return json.dumps(report.to_dict(), indent=2, default=default)


def write_json(report: LabReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(report) + "\n")
