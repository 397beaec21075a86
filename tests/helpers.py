"""Helpers shared by tests of several modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fastpost.cluster.postgres import PgNode
from fastpost.cluster.processes import free_port
from fastpost.security import Passwords, Verification
from fastpost.settings import Settings
from tests.servers import stop_group, wait_until_ready

T = TypeVar("T")


class GatedPasswords(Passwords):
    """Passwords whose hashes count themselves and wait at a gate, so that a test sees how
    many run at once and decides when they finish. The real Argon2 runs after the gate."""

    def __init__(self, settings: Settings, *, gated: bool = True) -> None:
        super().__init__(settings)
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0

    def _counted(self, work: Callable[[], T]) -> T:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            # Bounded: a hash run on the event loop would otherwise block it for ever.
            if not self.gate.wait(timeout=10):
                raise AssertionError("the gate was never opened")
            return work()
        finally:
            with self._lock:
                self.running -= 1

    def hash_sync(self, password: str) -> str:
        return self._counted(lambda: super(GatedPasswords, self).hash_sync(password))

    def verify_sync(self, password_hash: str | None, password: str) -> Verification:
        return self._counted(
            lambda: super(GatedPasswords, self).verify_sync(password_hash, password)
        )


def with_auth(settings: Settings, **changes: Any) -> Settings:
    """A copy of `settings` with some AuthSettings fields changed."""
    return settings.model_copy(update={"auth": settings.auth.model_copy(update=changes)})


async def wait_until(condition: Callable[[], bool], within: float = 10) -> None:
    """Poll `condition` until it holds; fail after `within` seconds."""
    async with asyncio.timeout(within):
        # Polled, not an asyncio.Event: the condition changes in other threads.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- PostgreSQL primary and streaming replicas (fastpost.cluster.postgres) ---------------


@dataclass
class PgCluster:
    primary: PgNode
    replicas: list[PgNode]
    state_dir: Path


@contextmanager
def postgres_cluster(apply_delays: Sequence[str | None] = (None,)) -> Iterator[PgCluster]:
    """A running primary and one streaming replica per entry of `apply_delays` (None: no
    recovery_min_apply_delay), under a temporary folder; all stopped and removed after.

    The folder is made with mkdtemp under the system's temporary folder, not pytest's
    tmp_path: as root the servers run as the `postgres` OS user, who cannot enter the
    private folders pytest makes."""
    import shutil
    import tempfile

    from fastpost.cluster import postgres

    state_dir = Path(tempfile.mkdtemp(prefix="fastpost-pg-"))
    nodes: list[PgNode] = []
    try:
        primary = postgres.init_primary(state_dir, port=free_port())
        nodes.append(primary)
        postgres.start(primary)
        replicas = []
        for n, delay in enumerate(apply_delays, start=1):
            replica = postgres.init_replica(
                primary, state_dir, port=free_port(), name=f"replica-{n}", apply_delay=delay
            )
            nodes.append(replica)
            postgres.start(replica)
            replicas.append(replica)
        yield PgCluster(primary, replicas, state_dir)
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(Exception):
                postgres.stop(node, mode="immediate")
        shutil.rmtree(state_dir, ignore_errors=True)


def postgres_missing_reason() -> str | None:
    """Why PostgreSQL-server tests cannot run here (its binaries are missing), or None."""
    from fastpost.cluster.postgres import PostgresMissing, pg_bindir

    try:
        pg_bindir()
    except PostgresMissing as exc:
        return str(exc)
    return None


@contextmanager
def route_server() -> Iterator[str]:
    """Run tests/bench/route_server.py (answers by path, sends X-Request-ID back) on a free
    port; yield its base URL; stop it on the way out."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "bench" / "route_server.py"), str(port)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.stdout is not None:
            process.stdout.close()
        stop_group(process)


# --- The `fastpost` command in real processes ------------------------------------------

# Argon2 at its cheapest: the seed and every login or registration hash a password.
FAST_ENV = {
    "FASTPOST_AUTH__ARGON2_TIME_COST": "1",
    "FASTPOST_AUTH__ARGON2_MEMORY_COST_KIB": "8",
    "FASTPOST_AUTH__ARGON2_PARALLELISM": "1",
}


def fastpost(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `fastpost ARGS` to its end in a process of its own; its output is captured."""
    return subprocess.run(
        [sys.executable, "-m", "fastpost.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def environment(tmp_path: Path) -> dict[str, str]:
    """This process's environment without its FASTPOST_ settings, plus a SQLite database and
    a data folder under `tmp_path`, and cheap password hashing."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASTPOST_")},
        **FAST_ENV,
        "FASTPOST_DB__URL": f"sqlite+aiosqlite:///{tmp_path / 'data' / 'fastpost.db'}",
        "FASTPOST_DATA_DIR": str(tmp_path / "data"),
    }


def migrate_and_seed(env: dict[str, str], cwd: Path, *seed_args: str) -> None:
    """`fastpost db upgrade`, then `fastpost seed SEED_ARGS`; both must succeed."""
    upgraded = fastpost("db", "upgrade", env=env, cwd=cwd)
    assert upgraded.returncode == 0, upgraded.stderr
    seeded = fastpost("seed", *seed_args, env=env, cwd=cwd)
    assert seeded.returncode == 0, seeded.stderr


@dataclass
class Serving:
    base: str
    process: subprocess.Popen[bytes]
    log_path: Path


@contextmanager
def serve_fastpost(*args: str, env: dict[str, str], cwd: Path) -> Iterator[Serving]:
    """Run `fastpost serve --port PORT ARGS` on a free port in a session of its own, its
    output in `cwd`/server.log; yield it once /health/ready answers; stop it and its workers
    on the way out."""
    port = free_port()
    log_path = cwd / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastpost.cli", "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/health/ready", process, log_path.read_text)
        yield Serving(base, process, log_path)
    finally:
        stop_group(process)


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics on a fresh connection: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
