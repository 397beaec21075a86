"""benchmarks/bench_shard_move.py end to end at a tiny size: a real move under a real load,
and a report that has its lines and loses nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from fastpost.bench.servers import ROOT, base_env

POSTGRES_URL = os.environ.get("FASTPOST_TEST_POSTGRES_URL")
REPORT_LINES = (
    "move total:",
    "writes frozen:",
    "checksums equal",
    "p99 / p99 before (all writes): during the move",
    "failed requests during the freeze:",
    "lost writes: 0",
    "rows of the shard left on database 0: 0",
)


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set FASTPOST_TEST_POSTGRES_URL")
def test_a_tiny_shard_move_under_load_reports_every_step_and_window_and_loses_no_write(
    tmp_path: Path,
) -> None:
    admin = make_url(POSTGRES_URL or "").set(drivername="postgresql", database="postgres")
    out = tmp_path / "move.json"
    command = [
        sys.executable, "-m", "benchmarks.bench_shard_move",
        "--database-url", admin.render_as_string(hide_password=False),
        "--db-name", "fp_test_bench_move",
        "--users", "100", "--posts", "640", "--likes", "640", "--follows", "100",
        "--rate", "30", "--writers", "4", "--workers", "1",
        "--warmup", "0.5", "--before", "2", "--move-budget", "2", "--after", "1.5",
        "--no-pin", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr

    for line in REPORT_LINES:
        assert line in done.stdout, (line, done.stdout)
    report = json.loads(out.read_text())
    steps = [step["step"].split(" (")[0] for step in report["move"]["steps"]]
    assert steps == ["start", "copy", "freeze", "catch up", "verify", "switch", "delete"]
    assert report["move"]["checksums_equal"]
    assert 0 < report["move"]["freeze_s"] < report["move"]["total_s"]
    assert set(report["windows"]) == {"before", "during the move", "during the freeze", "after"}
    before = report["windows"]["before"]["groups"]
    assert list(before) == [
        "all writes",
        "moving shard",
        "others, source db",
        "others, target db",
    ]
    assert before["all writes"]["count"] == sum(before[g]["count"] for g in list(before)[1:])
    assert before["all writes"]["count"] > 0
    assert report["p99_ratios_to_before"]["during the move"] is not None
    writes = report["writes"]
    assert writes["posts_acknowledged"] > 0
    assert writes["likes_acknowledged"] > 0
    assert writes["lost"] == 0
    assert writes["posts_duplicated"] == 0
    assert report["after_move"]["map"] == {"database": 1, "state": "ready"}
    assert set(report["after_move"]["left_on_source"].values()) == {0}
