"""The report of a bench run: a Rich table, report.json and report.md with the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fastpost.bench.routes import describe_errors
from fastpost.messages import Lang, has, text


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
    if value is None:
        return "-"
    if verdict["name"] in ("server_cpu", "error_rate"):
        return f"{value:.2%}"
    if verdict["name"] == "capacity_ratio":
        return f"{value:.3f}"
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
                f"{describe_errors(run['errors_by_type'])} "
                f"({_pct(run['error_rate'])} of {run['attempted']:,})",
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
            f"{describe_errors(fixed['errors_by_type'])} "
            f"({_pct(latency['error_rate'])} of {fixed['attempted']:,})",
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
    "errors (share of attempted)",
    "server CPU",
    "generator CPU",
)
ROUTE_HEADERS = ("route", "share", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors")
STEP_HEADERS = ("offered req/s", "answered req/s", "p50 ms", "p99 ms", "errors", "verdict")
WRK_ROUTE_NOTE = (
    "share: of the requests sent; errors: of the answers; wrk's timeouts and socket errors "
    "are not tied to a route, see its total row"
)


def _route_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [
        (
            row["route"],
            _pct(row["share"]),
            f"{row['rps']:,.0f}",
            _ms(row["p50_ms"]),
            _ms(row["p95_ms"]),
            _ms(row["p99_ms"]),
            _ms(row["max_ms"]),
            f"{describe_errors(row['errors'])} ({_pct(row['error_rate'])})",
        )
        for row in rows
    ]
    return out


def _route_sections(report: dict[str, Any]) -> list[tuple[str, list[tuple[str, ...]]]]:
    """(title, rows) of each per-route table: wrk on each server, then the fixed rate."""
    sections = []
    for name in ("fastpost", "baseline"):
        run = report["throughput"].get(name)
        if run and run.get("routes"):
            sections.append((f"wrk {name}, by route", _route_rows(run["routes"])))
    fixed = report["fixed_rate"]
    if fixed.get("routes"):
        sections.append((f"fixed {fixed['rate']:g}/s, by route", _route_rows(fixed["routes"])))
    return sections


def _step_rows(capacity: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for step in sorted(capacity["steps"], key=lambda s: s["offered_rps"]):
        why = _step_failure(step, capacity["bound_ms"])
        rows.append(
            (
                f"{step['offered_rps']:,.0f}",
                f"{step['achieved_rps']:,.0f}",
                _ms(step["p50_ms"]),
                _ms(step["p99_ms"]),
                f"{step['errors']:,}",
                why or "pass",
            )
        )
    return rows


def _step_failure(step: dict[str, Any], bound_ms: float) -> str | None:
    from fastpost.bench.capacity import Step

    return Step(**step).failure(bound_ms)


def capacity_summary(report: dict[str, Any]) -> str | None:
    """One sentence: both capacities, their ratio and what the ratio can claim."""
    capacity = report.get("capacity")
    if not capacity:
        return None
    found = capacity["sustained_rps"]
    text = (
        f"capacity at p99 <= {capacity['bound_ms']:g} ms: fastpost "
        + (f"{found:,.0f} req/s" if found else "below the first step")
        + f" (stopped: {capacity['stopped_because']})"
    )
    theirs = report.get("baseline_capacity")
    if theirs:
        text += (
            ", baseline "
            + (f"{theirs['sustained_rps']:,.0f} req/s" if theirs["sustained_rps"] else "none")
            + f" (stopped: {theirs['stopped_because']}); ratio "
            f"{_ratio(capacity.get('vs_baseline'))}, {capacity.get('vs_baseline_claim')}"
        )
    verdicts = [
        v for v in report["verdict"]["ours"] if v["name"] in ("capacity_rps", "capacity_ratio")
    ]
    for verdict in verdicts:
        text += f"; {verdict['what']} {_limit(verdict)}: " + (
            "PASS" if verdict["passed"] else "FAIL"
        )
    return text


_GROUP_TITLES = {"course": "bench.course_targets", "ours": "bench.our_targets"}


def print_verdict(
    report: dict[str, Any], console: Console, lang: Lang, *, fail_exit_code: int | None
) -> None:
    """The last lines of a run: every failed target, then one line that says whether the
    run met every target. `make bench` exits 0 either way, so this line is the answer.
    `fail_exit_code`: the status this run exits with on a failed target (--fail-on-target)."""
    judged = [v for group in ("course", "ours") for v in report["verdict"][group]]
    failed = [(group, v) for group in ("course", "ours") for v in report["verdict"][group]
              if not v["passed"]]  # fmt: skip
    for group, verdict in failed:
        measured = _measured(verdict) if verdict["measured"] is not None else "-"
        console.print(
            f"[red]{text('bench.target_failed', lang)}:[/red] {text(f'bench.group.{group}', lang)}:"
            f" {_what(verdict, lang)} {_limit(verdict)} "
            f"({text('bench.col.measured', lang)} {measured})",
            highlight=False,
        )
    if failed:
        names = ", ".join(f"{group}:{v['name']}" for group, v in failed)
        console.rule(style="red")
        console.print(
            "[bold red]"
            + text("bench.verdict_fail", lang, failed=len(failed), total=len(judged), names=names)
            + "[/bold red]",
            highlight=False,
        )
        if fail_exit_code is None:
            console.print(text("bench.verdict_exit", lang), highlight=False)
    else:
        console.rule(style="green")
        console.print(
            "[bold green]"
            + text("bench.verdict_pass", lang, passed=len(judged), total=len(judged))
            + "[/bold green]",
            highlight=False,
        )


def failures(report: dict[str, Any]) -> list[str]:
    """Name every target the run failed, as `course: p95 latency ... <= 200 (measured 250.3)`."""
    return [
        f"{group}: {verdict['what']} {_limit(verdict)} (measured "
        + (_measured(verdict) if verdict["measured"] is not None else "nothing")
        + ")"
        for group in ("course", "ours")
        for verdict in report["verdict"][group]
        if not verdict["passed"]
    ]


def _header(header: str, lang: Lang) -> str:
    key = f"bench.col.{header}"
    return text(key, lang) if has(key) else header


def _what(verdict: dict[str, Any], lang: Lang) -> str:
    key = f"target.{verdict['name']}"
    return text(key, lang) if lang != "en" and has(key) else str(verdict["what"])


def print_report(report: dict[str, Any], console: Console, lang: Lang = "en") -> None:
    """Print the run's figures, per-worker usage, /metrics deltas and the verdicts."""
    config = report["config"]
    table = Table(
        title=text(
            "bench.title",
            lang,
            scenario=config["scenario"],
            workers=config["workers"],
            database=f"{config['database']}{' + Redis' if config['redis'] else ''}",
        ),
        caption=report["method"],
    )
    for header in HEADERS:
        table.add_column(_header(header, lang), justify="left" if header == "run" else "right")
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    for title, rows in _route_sections(report):
        routes = Table(title=title)
        for header in ROUTE_HEADERS:
            routes.add_column(
                _header(header, lang), justify="left" if header == "route" else "right"
            )
        for route_row in rows:
            routes.add_row(*route_row)
        console.print(routes)
    for worker in report["server"]["workers"]:
        console.print(
            text(
                "bench.worker",
                lang,
                pid=worker["pid"],
                cpu=worker["cpu"],
                rss=worker["rss_mb"],
            ),
            highlight=False,
        )
    metrics = report["metrics"]
    if metrics:
        console.print(
            text(
                "bench.metrics_line",
                lang,
                queries=metrics["queries"],
                per_request=metrics["queries_per_request"],
                ms_per_request=metrics["query_ms_per_request"],
                hits=metrics["cache_hits"],
                misses=metrics["cache_misses"],
                rate=metrics["cache_hit_rate"],
            ),
            highlight=False,
        )
    summary = capacity_summary(report)
    if summary:
        console.print(summary, highlight=False)
    for group, title in _GROUP_TITLES.items():
        verdicts = Table(title=text(title, lang))
        for header in ("target", "limit", "measured", "verdict"):
            verdicts.add_column(text(f"bench.col.{header}", lang))
        for verdict in report["verdict"][group]:
            verdicts.add_row(
                _what(verdict, lang),
                _limit(verdict),
                _measured(verdict),
                f"[green]{text('bench.pass', lang)}[/green]"
                if verdict["passed"]
                else f"[red]{text('bench.fail', lang)}[/red]",
            )
        console.print(verdicts)
    for reason in report["invalid_reasons"]:
        console.print(f"[red]INVALID:[/red] {reason}", highlight=False)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


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
    lines += _table(HEADERS, _rows(report))
    for title, rows in _route_sections(report):
        lines += [f"### {title}", ""]
        lines += _table(ROUTE_HEADERS, rows)
        if title.startswith("wrk"):
            lines += [f"({WRK_ROUTE_NOTE}.)", ""]
    shares = report["scenario"].get("route_shares")
    if shares:
        lines.append(
            "Mix as sent (the request list, walked in a cycle): "
            + ", ".join(f"{route} {share:.1%}" for route, share in shares.items())
        )
        lines.append("")
    pinning = report.get("pinning")
    if pinning:
        lines.append(
            f"Cores: fastpost's workers {pinning['fastpost_workers'] or 'any'}, the baseline's "
            f"workers {pinning['baseline_workers'] or 'any'}, wrk and the fixed-rate generator "
            f"{pinning['generators'] or 'any'}, the database {pinning['database']}."
            + "".join(f" Note: {note}." for note in pinning["shared"])
        )
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
    lines.append("")
    capacity = report.get("capacity")
    if capacity:
        lines += ["## Capacity", "", f"{capacity_summary(report)}.", ""]
        for name, found in (("fastpost", capacity), ("baseline", report.get("baseline_capacity"))):
            if found:
                lines += [f"### {name}: steps", ""]
                lines += _table(STEP_HEADERS, _step_rows(found))
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
