"""ops/: the Prometheus config and alert rules pass promtool and their unit tests, the
Grafana dashboard only queries metrics fastpost exports, and a real Prometheus scrapes a
real two-worker fastpost."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from fastpost.cluster.processes import free_port
from fastpost.observability.metrics import EXPORTED_METRICS
from tests.observability.served import serve

OPS = Path(__file__).resolve().parents[2] / "ops"
PROMETHEUS_DIR = OPS / "prometheus"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # CI installs it (.ci/run); a developer machine may not have it.
        pytest.skip(f"{name} is not installed (Debian package prometheus)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def test_alert_rules_are_valid() -> None:
    result = _run(_tool("promtool"), "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_series_that_break_its_target_and_only_then() -> None:
    result = _run(_tool("promtool"), "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    tests = (PROMETHEUS_DIR / "alerts.test.yml").read_text()
    alerts = set(re.findall(r"^\s*- alert: (\w+)", rules, re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)", tests))
    assert alerts
    assert alerts == tested


def test_scrape_config_is_valid() -> None:
    result = _run(_tool("promtool"), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# PromQL words that are not metric names.
_PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "offset", "rate", "irate", "increase",
    "histogram_quantile", "le", "bool", "topk", "bottomk", "label_values", "e",
}  # fmt: skip
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"[^"]*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # groupings
    expr = re.sub(r"\$\w+", "", expr)  # dashboard variables
    expr = re.sub(r"\b\d+(\.\d+)?[a-z]*", "", expr)  # numbers and durations (offset 1h)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)) - _PROMQL_WORDS
    return {next((n[: -len(s)] for s in _HISTOGRAM_SUFFIXES if n.endswith(s)), n) for n in names}


def test_the_dashboard_queries_only_metrics_that_fastpost_exports() -> None:
    dashboard = json.loads((OPS / "grafana" / "fastpost.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= EXPORTED_METRICS, used - EXPORTED_METRICS
    # RED per route, DB, pool, cache and per-worker figures are all on it.
    for name in (
        "http_requests_total",
        "http_request_duration_seconds",
        "db_query_duration_seconds",
        "db_pool_connections",
        "cache_hits_total",
        "fastpost_worker_cpu_seconds_total",
        "fastpost_worker_resident_memory_bytes",
    ):
        assert name in used


def test_the_checker_sees_through_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (route, le) (rate(x_bucket{a="b"}[5m]))) / y offset 1h'
    ) == {"x", "y"}


HEALTH_RATE = 'sum(rate(http_requests_total{route="/health"}[10s]))'


def test_a_real_prometheus_scrapes_two_workers_and_reports_the_request_rate(
    tmp_path: Path,
) -> None:
    prometheus = _tool("prometheus")
    with serve(tmp_path, workers=2) as server:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        # The cluster's instances (ops/prometheus/prometheus.yml) replaced by this server.
        config.write_text(
            re.sub(
                r"targets:\n(\s+- \S+\n)+",
                f"targets: [{server.base.removeprefix('http://')}]\n",
                (PROMETHEUS_DIR / "prometheus.yml").read_text(),
            )
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("  - alerts.yml", f"  - {PROMETHEUS_DIR / 'alerts.yml'}")
        )
        process = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}/api/v1/query"
        try:
            deadline = time.monotonic() + 60
            rate = 0.0
            while rate <= 0:
                assert time.monotonic() < deadline, "Prometheus never saw the request rate"
                for _ in range(20):
                    httpx.get(f"{server.base}/health", headers={"Connection": "close"})
                time.sleep(0.5)
                try:
                    answer = httpx.get(
                        api,
                        params={"query": 'sum(rate(http_requests_total{route="/health"}[10s]))'},
                    ).json()
                except httpx.TransportError:
                    continue
                assert answer["status"] == "success"
                result = answer["data"]["result"]
                rate = float(result[0]["value"][1]) if result else 0.0
            targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets").json()
            [target] = targets["data"]["activeTargets"]
            assert target["health"] == "up"
            workers = httpx.get(
                api, params={"query": "count(fastpost_worker_resident_memory_bytes)"}
            ).json()["data"]["result"]
            assert float(workers[0]["value"][1]) == 2
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr:
                process.stderr.close()
