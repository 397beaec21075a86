"""A real `fastpost serve --workers N` for the observability tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import environment, fastpost, scrape, serve_fastpost


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
    with serve_fastpost("--workers", str(workers), env=env, cwd=tmp_path) as serving:
        yield Served(serving.base, serving.process, tmp_path / "data" / "metrics", serving.log_path)


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
