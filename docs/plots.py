"""Draw the guide's plots from a lab JSON and a bench report folder: `make docs` runs a small
`fastpost lab --json` and `fastpost bench --out`, then this script.

    python docs/plots.py --lab reports/docs/lab.json --bench reports/docs/bench --out docs/img

Nothing here is drawn by hand: every figure comes from those two runs, whose date, machine
and command are written beside the plots in `docs/img/SOURCE.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Every file this script writes under --out; the guide links these names only
# (tests/test_docs.py checks that each image a page shows is one of them).
PLOTS = (
    "lab_ratios.png",
    "pagination.png",
    "latency_over_time.png",
    "cache_hits.png",
    "SOURCE.md",
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lab_ratios(lab: dict[str, Any], path: Path) -> None:
    """One bar per experiment: how many times the anti-pattern's figure is the fix's."""
    plt = _pyplot()
    names, ratios, what = [], [], []
    for experiment in lab["experiments"]:
        worst = max(
            (m["ratio"] for m in experiment["measurements"] if m["ratio"] and not m["is_fix"]),
            default=None,
        )
        if worst:
            names.append(experiment["title"].split(":")[0])
            ratios.append(worst)
            what.append(experiment["ratio_of"])
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    axes.barh(names[::-1], ratios[::-1], color="#c0504d")
    axes.set_xscale("log")
    axes.axvline(1, color="black", linewidth=0.8)
    for y, (ratio, of) in enumerate(zip(ratios[::-1], what[::-1], strict=True)):
        axes.text(ratio, y, f" {ratio:,.1f}x {of}", va="center", fontsize=8)
    axes.set_xlabel("anti-pattern / fix (log scale; 1 = as fast as the fix)")
    axes.set_title("fastpost lab: each anti-pattern against its fix")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def pagination(lab: dict[str, Any], path: Path) -> None:
    """Time per page by OFFSET and by cursor, at each page the lab reached."""
    plt = _pyplot()
    experiment = next((e for e in lab["experiments"] if e["key"] == "pagination"), None)
    figure, axes = plt.subplots(figsize=(7, 4))
    if experiment is not None:
        for variant, colour in (("OFFSET", "#c0504d"), ("keyset (cursor)", "#4f81bd")):
            points = [
                (int(m["size"].removeprefix("page ").replace(",", "")), m["time_ms"])
                for m in experiment["measurements"]
                if m["variant"] == variant and m["time_ms"] is not None
            ]
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=variant, color=colour)
        axes.set_xscale("log")
        axes.legend()
    axes.set_xlabel("page number (log scale)")
    axes.set_ylabel("ms per page")
    axes.set_title("OFFSET against keyset pagination")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def cache_hits(bench: dict[str, Any], lab: dict[str, Any], path: Path) -> None:
    """Cache hits and misses: the bench's wrk run (from /metrics) and the lab's cache run."""
    plt = _pyplot()
    bars: dict[str, tuple[float, float]] = {}
    metrics = bench.get("metrics") or {}
    if metrics:
        bars["bench, wrk run"] = (metrics["cache_hits"], metrics["cache_misses"])
    experiment = next((e for e in lab["experiments"] if e["key"] == "cache"), None)
    if experiment is not None:
        stats = experiment["extra"].get("cache_stats", {})
        # A hit in either tier; a miss is what reached the database (a tier-1 miss that
        # Redis answered is no miss for the reader).
        hits = stats.get("local:hit", 0) + stats.get("redis:hit", 0)
        misses = stats.get("origin:load", 0)
        bars["lab, experiment 6"] = (hits, misses)
    figure, axes = plt.subplots(figsize=(7, 3))
    for y, (hits, misses) in enumerate(bars.values()):
        total = hits + misses or 1
        axes.barh(y, hits / total, color="#9bbb59")
        axes.barh(y, misses / total, left=hits / total, color="#c0504d")
        axes.text(0.01, y, f"{hits / total:.0%} hits of {total:,.0f}", va="center")
    axes.set_yticks(range(len(bars)), list(bars))
    axes.set_xlim(0, 1)
    axes.set_xlabel("share of cache look-ups (green: hits, red: misses)")
    axes.set_title("cache hit rate")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", type=Path, required=True, help="`fastpost lab --json` output")
    parser.add_argument("--bench", type=Path, required=True, help="`fastpost bench --out` folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lab = json.loads(args.lab.read_text())
    bench = json.loads((args.bench / "report.json").read_text())
    lab_ratios(lab, args.out / "lab_ratios.png")
    pagination(lab, args.out / "pagination.png")
    shutil.copyfile(args.bench / "latency_over_time.png", args.out / "latency_over_time.png")
    cache_hits(bench, lab, args.out / "cache_hits.png")
    (args.out / "SOURCE.md").write_text(
        f"# Where the plots come from\n\n"
        f"Drawn by `make docs` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on "
        f"{platform.node() or 'this machine'} ({os.cpu_count()} cores, {platform.machine()}, "
        f"{platform.python_implementation()} {platform.python_version()}), from "
        f"`{args.lab}` (fastpost lab) and `{args.bench}` (fastpost bench, scenario "
        f"{bench.get('config', {}).get('scenario', '?')}). The lab ran on "
        f"{lab.get('environment', {}).get('dialect', '?')} with the seed plan "
        f"{lab.get('environment', {}).get('seed_plan', '?')}. Figures from another machine, "
        f"or another moment of a shared one, differ.\n"
    )
    for name in PLOTS:
        assert (args.out / name).exists(), name
    print(f"plots written to {args.out}: {', '.join(PLOTS)}")


if __name__ == "__main__":
    main()
