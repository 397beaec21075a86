"""Two `fastpost serve` on one data folder: the second never empties the first's metrics."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import environment, fastpost, scrape, serve_fastpost


def _health_requests(base: str) -> float:
    return sum(
        value
        for (name, labels), value in scrape(base).items()
        if name == "http_requests_total" and ("route", "/health") in labels
    )


def test_a_second_server_on_the_same_data_folder_leaves_the_first_ones_counters(
    tmp_path: Path,
) -> None:
    env = environment(tmp_path)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with serve_fastpost(env=env, cwd=tmp_path / "first") as first:
        for _ in range(5):
            assert httpx.get(f"{first.base}/health").status_code == 200
        assert _health_requests(first.base) == 5
        with serve_fastpost(env=env, cwd=tmp_path / "second") as second:
            httpx.get(f"{second.base}/health")
            assert _health_requests(first.base) == 5
            assert _health_requests(second.base) == 1
        assert "another fastpost serve uses" in second.log_path.read_text()
    # Once both are gone, the next start has the folder to itself and clears the leftovers.
    with serve_fastpost(env=env, cwd=tmp_path / "first") as third:
        assert _health_requests(third.base) == 0
    assert not list((tmp_path / "data" / "metrics").glob("serve-*"))


def test_an_explicit_metrics_folder_in_use_refuses_a_second_server(tmp_path: Path) -> None:
    env = {**environment(tmp_path), "FASTPOST_OBSERVABILITY__METRICS_DIR": str(tmp_path / "m")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    with serve_fastpost(env=env, cwd=tmp_path):
        refused = fastpost("serve", "--port", "1", env=env, cwd=tmp_path, timeout=60)
    assert refused.returncode == 2
    assert "belongs to a running fastpost serve" in refused.stdout
