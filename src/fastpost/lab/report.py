"""The lab's output: a Rich table with a verdict per experiment, and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastpost.lab.result import ExperimentResult, LabReport, Measurement
from fastpost.messages import Lang, has, text

# Details worth a column's worth of space in the terminal; the JSON keeps them all. The p99
# loop lag has a column of its own (Measurement.loop_lag_ms).
_SHOWN_DETAILS = ("lag_p50_ms", "lag_max_ms", "scan", "served_from")


def _kib(n: int | None) -> str:
    # One unit for the whole column: KiB, however small or large.
    return "" if n is None else f"{n / 1024:,.1f}"


def _ms(value: float | None) -> str:
    # One unit for the whole column: ms, with the decimals a sub-microsecond figure needs.
    if value is None:
        return ""
    if value < 0.01:
        return f"{value:.5f}"
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def _ratio(m: Measurement, ratio_of: str, lang: Lang) -> str:
    if m.same_statement:
        return text("lab.same_statement", lang)
    if m.ratio is None:
        return ""
    if m.is_fix:
        return text("lab.fix", lang)
    figure = f"{m.ratio:,.1f}x" if m.ratio < 100 else f"{m.ratio:,.0f}x"
    return f"{figure} {_ratio_name(ratio_of, lang)}"


def _ratio_name(ratio_of: str, lang: Lang) -> str:
    return text(f"ratio.{ratio_of}", lang) if has(f"ratio.{ratio_of}") else ratio_of


_SIZE_WORDS = {"page": "página", "rows": "filas", "items": "elementos", "posts": "posts"}


def _size(size: str, lang: Lang) -> str:
    if lang == "en":
        return size
    return " ".join(_SIZE_WORDS.get(word, word) for word in size.split(" "))


def _details(m: Measurement, lang: Lang = "en") -> str:
    parts = []
    for key in _SHOWN_DETAILS:
        value = m.details.get(key)
        if value is None:
            continue
        label = key.removesuffix("_ms").replace("_", " ")
        parts.append(f"{label} {value:g} ms" if key.endswith("_ms") else f"{label}: {value}")
    if m.note_key and lang != "en":
        parts.append(text(m.note_key, lang, **m.note_params))
    elif m.note:
        parts.append(m.note)
    return "; ".join(parts)


def _experiment_text(result: ExperimentResult, part: str, lang: Lang) -> str:
    """The experiment's title, why or verdict in `lang` (its English words otherwise)."""
    key = f"lab.{result.key}.{part}"
    english = {"title": result.title, "why": result.why, "verdict": result.verdict}[part]
    if lang == "en" or not has(key):
        return english
    if part == "verdict":
        if not result.verdict_params:
            none = f"lab.{result.key}.verdict_none"
            return text(none, lang) if has(none) else english
        params = {
            name: text(value, lang) if isinstance(value, str) and has(value) else value
            for name, value in result.verdict_params.items()
        }
        if "size" in params:
            params["size"] = _size(str(params["size"]), lang)
        if "page" in params:
            params["page"] = _size(str(params["page"]), lang)
        return text(key, lang, **params)
    return text(key, lang)


def render(report: LabReport, lang: Lang = "en") -> Table:
    """One table for the whole run, a section per experiment."""
    env = report.environment
    where = env.get("database", "no database")
    table = Table(
        title=text("lab.title", lang, where=where, repeat=env["repeat"]),
        caption=text("lab.ratio_legend", lang),
        show_lines=False,
    )
    for name, justify in (
        ("experiment", "left"),
        ("variant", "left"),
        ("size", "left"),
        ("queries", "right"),
        ("time", "right"),
        ("memory", "right"),
        ("loop_lag", "right"),
        ("ratio", "right"),
        ("detail", "left"),
    ):
        table.add_column(text(f"lab.col.{name}", lang), justify=justify)  # type: ignore[arg-type]
    for result in report.experiments:
        for i, m in enumerate(result.measurements):
            table.add_row(
                f"{result.title.split('.')[0]} {result.key}" if i == 0 else "",
                f"[bold]{m.variant}[/bold]" if m.is_fix else m.variant,
                _size(m.size, lang),
                "" if m.queries is None else str(m.queries),
                _ms(m.time_ms),
                _kib(m.memory_bytes),
                _ms(m.loop_lag_ms),
                _ratio(m, result.ratio_of, lang),
                _details(m, lang),
                end_section=i == len(result.measurements) - 1,
            )
    return table


def print_report(report: LabReport, console: Console, lang: Lang = "en") -> None:
    console.print(render(report, lang))
    for result in report.experiments:
        print_verdict(result, console, lang)


def print_verdict(result: ExperimentResult, console: Console, lang: Lang = "en") -> None:
    ratio = (
        ""
        if result.ratio_of == "time"
        else " [dim]("
        + text("lab.ratio_of", lang, what=_ratio_name(result.ratio_of, lang))
        + ")[/dim]"
    )
    title = _experiment_text(result, "title", lang)
    verdict = _experiment_text(result, "verdict", lang)
    console.print(f"[bold]{escape(title)}[/bold]: {escape(verdict)}{ratio}")
    why = _experiment_text(result, "why", lang)
    console.print(f"  [dim]{text('lab.why', lang)}: {escape(why)}[/dim]")
    for number, note in enumerate(result.notes):
        if lang != "en" and number in result.note_keys:
            key, params = result.note_keys[number]
            note = text(key, lang, **params)
        console.print(f"  [dim]{escape(note)}[/dim]")


def to_json(report: LabReport) -> str:
    def default(value: Any) -> Any:
        return str(value)

    return json.dumps(report.to_dict(), indent=2, default=default)


def write_json(report: LabReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(report) + "\n")
