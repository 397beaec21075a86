"""fastpost instances: each a `fastpost serve` of its own, on its own port."""

from __future__ import annotations

import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from fastpost.cluster import processes

# Every instance runs `python -m fastpost.cli serve`; its command line says so.
MARKER = "fastpost.cli serve"
# Set per instance by the cluster, never inherited: instances sharing a metrics folder would
# add up each other's counters.
_NOT_INHERITED = ("PROMETHEUS_MULTIPROC_DIR", "FASTPOST_OBSERVABILITY__METRICS_DIR")


def environment(instance_env: Mapping[str, str]) -> dict[str, str]:
    """Return the environment of an instance: this one, with the cluster's settings on top.

    Other FASTPOST_* variables set here (FASTPOST_CACHE__ENABLED=false, say) reach every
    instance.
    """
    env = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    env.update(instance_env)
    return env


def start(
    directory: Path, *, port: int, workers: int, env: Mapping[str, str], log_file: Path
) -> int:
    """Start `fastpost serve` on 127.0.0.1:`port`, working in `directory`; return its pid.

    It works in its own folder so that no `.env` file from where `cluster up` ran reaches
    it behind the cluster's back.
    """
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "fastpost.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return processes.spawn(command, env=env, log_file=log_file, cwd=directory)


def is_ready(port: int) -> bool:
    """Say whether the instance on `port` answers its readiness probe."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=3) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def requests_served(port: int) -> int | None:
    """Return the requests the instance on `port` has answered (its /metrics), or None."""
    # Imported here: `fastpost serve` must set up prometheus_client's multiprocess folder
    # before anything in its process imports the library (see fastpost.cli).
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total":
                total += sample.value
    return int(total)


def stop(pid: int, *, timeout: float = 20) -> None:
    """Stop an instance gracefully (SIGTERM: it stops accepting and finishes what is in
    flight), by force after `timeout`."""
    processes.stop_group(pid, marker=MARKER, first=signal.SIGTERM, timeout=timeout)
