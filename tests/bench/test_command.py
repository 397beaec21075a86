"""`fastpost bench` end to end: a short real run on SQLite, and the report it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastpost.bench.command import TARGET_FAILED_EXIT
from fastpost.bench.servers import base_env

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_bench_health_on_sqlite_writes_report_verdicts_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "report"
    command = [
        sys.executable, "-m", "fastpost.cli", "bench", "--scenario", "health",
        "--database", "sqlite", "--users", "5", "--posts", "10", "--follows", "0",
        "--likes", "0", "--duration", "1", "--warmup", "0", "--fixed-duration", "1",
        "--rate", "20", "--target", "p99_ms=1000", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=base_env(), capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads((out / "report.json").read_text())
    assert report["config"]["scenario"] == "health"
    fastpost, baseline = report["throughput"]["fastpost"], report["throughput"]["baseline"]
    for run in (fastpost, baseline):
        assert run["requests"] > 0
        assert run["rps"] > 0
        assert run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert run["wrk_cpu"] >= 0
    assert fastpost["errors"] == 0
    assert fastpost["vs_baseline"] == fastpost["rps"] / baseline["rps"]
    fixed = report["fixed_rate"]
    assert fixed["latency"]["count"] == 20
    assert fixed["latency"]["errors"] == 0
    assert fixed["generator_cpu"] >= 0
    assert fixed["server_cpu"] >= 0
    assert report["server"]["workers"]
    assert all(w["rss_mb"] > 0 for w in report["server"]["workers"])
    assert report["metrics"]["http_requests"] >= fastpost["requests"]
    assert report["scenario"]["median_body_bytes"] > 0

    verdict = report["verdict"]
    assert [v["name"] for v in verdict["course"]] == ["p95_ms", "rps", "server_cpu", "error_rate"]
    assert {"p99_ms": 1000.0}.items() <= {v["name"]: v["limit"] for v in verdict["ours"]}.items()
    for item in verdict["course"] + verdict["ours"]:
        assert set(item) == {"name", "what", "limit", "comparison", "measured", "passed"}
        assert isinstance(item["passed"], bool)
    assert verdict["course_passed"] == all(v["passed"] for v in verdict["course"])
    assert isinstance(report["valid"], bool)

    assert set(report["plots"]) == {
        "latency_over_time",
        "latency_histogram",
        "latency_over_time_by_route",
        "wrk_tail_by_route",
    }
    for name in report["plots"].values():
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    markdown = (out / "report.md").read_text()
    assert "![latency over time](latency_over_time.png)" in markdown
    assert "Course targets" in markdown


def test_mixed_bench_reports_each_route_both_capacities_and_fails_on_a_missed_target(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    command = [
        sys.executable, "-m", "fastpost.cli", "bench", "--scenario", "mixed",
        "--database", "sqlite", "--users", "5", "--posts", "20", "--follows", "0",
        "--likes", "0", "--login-users", "2", "--duration", "1", "--warmup", "0",
        "--fixed-duration", "1", "--rate", "30", "--capacity", "--start-rate", "20",
        "--max-rate", "30", "--step-factor", "1.5", "--step-duration", "0.5",
        "--p99-bound", "5000", "--target", "rps=1000000000", "--fail-on-target",
        "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=base_env(), capture_output=True, text=True, timeout=300, check=False
    )

    # The run itself went through; the impossible target failed it, and says so.
    assert done.returncode == TARGET_FAILED_EXIT, done.stdout + done.stderr
    assert "target failed: ours: requests/s under wrk > 1e+09" in done.stdout
    # The verdict is the last thing printed, whatever the exit status.
    assert done.stdout.strip().splitlines()[-1].startswith("VERDICT: ")
    assert "ours:rps" in done.stdout.strip().splitlines()[-1]
    report = json.loads((out / "report.json").read_text())
    mix = {"GET /posts/", "GET /users/me", "POST /posts/"}
    assert report["scenario"]["route_shares"] == pytest.approx(
        {"GET /posts/": 3 / 6, "GET /users/me": 2 / 6, "POST /posts/": 1 / 6}
    )
    wrk = report["throughput"]["fastpost"]
    assert {row["route"] for row in wrk["routes"]} == mix
    assert sum(row["attempted"] for row in wrk["routes"]) == wrk["requests"]
    assert wrk["error_rate"] == wrk["errors"] / wrk["attempted"]
    for row in wrk["routes"]:
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["errors"]["status"] == {}
    fixed = report["fixed_rate"]
    assert {row["route"]: row["attempted"] for row in fixed["routes"]} == {
        "GET /posts/": 15, "GET /users/me": 10, "POST /posts/": 5,
    }  # fmt: skip
    # Capacity against capacity: both searched with the same steps and bound.
    ours, theirs = report["capacity"], report["baseline_capacity"]
    assert [s["offered_rps"] for s in ours["steps"]] == [20, 30]
    assert [s["offered_rps"] for s in theirs["steps"]] == [20, 30]
    assert ours["vs_baseline"] == ours["sustained_rps"] / theirs["sustained_rps"]
    markdown = (out / "report.md").read_text()
    assert "### wrk fastpost, by route" in markdown
    assert "### baseline: steps" in markdown
    assert "Cores: fastpost's workers" in markdown
    assert (out / "wrk_tail_by_route.png").read_bytes().startswith(PNG_SIGNATURE)
