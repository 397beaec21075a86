"""A real `fastpost serve --workers N` for the observability tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import stop_group, wait_until_ready
from tests.test_cli import environment, fastpost, free_port


@dataclass
class Served:
    base: str
    process: subprocess.Popen[bytes]
    metrics_dir: Path
    log_path: Path


@contextmanager
def serve(
    tmp_path: Path, *, workers: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[Served]:
    env = {
        **environment(tmp_path),
        # Workers fold their tallies into the shared files this often (default 1 s).
        "FASTPOST_OBSERVABILITY__METRICS_FLUSH_SECONDS": "0.2",
        **(extra_env or {}),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    assert fastpost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastpost.cli", "serve", "--port", str(port),
             "--workers", str(workers)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/health/ready", process, log_path.read_text)
        yield Served(base, process, tmp_path / "data" / "metrics", log_path)
    finally:
        stop_group(process)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on a fresh connection: {(sample name, sorted labels): value}."""
    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v for (n, ls), v in samples.items()
        if n == name and labels.items() <= dict(ls).items()
    )  # fmt: skip


def worker_pids(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[int]:
    return {
        int(dict(labels)["pid"])
        for name, labels in samples
        if name == "fastpost_worker_cpu_seconds_total"
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_until(base: str, settled: Callable[[Samples], bool], timeout: float = 10) -> Samples:
    """Scrape until `settled` holds: other workers flush their tallies every 0.2 s here."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base)
        if settled(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)
