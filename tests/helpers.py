"""Helpers shared by tests of several modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastpost.cluster.postgres import PgNode
from fastpost.security import Passwords, Verification
from fastpost.settings import Settings

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


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    import subprocess
    import sys

    from tests.servers import stop_group

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
