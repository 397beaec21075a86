"""The cluster's Redis: a redis-server of its own, on loopback, keeping nothing on disk; or,
with `--redis-cluster N`, N of them made into a Redis Cluster (`redis-cli --cluster create`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from fastpost.cluster import processes

INSTALL_HINT = (
    "redis-server is not installed. Debian/Ubuntu: `sudo apt-get install redis-server`; "
    "macOS: `brew install redis`."
)
MARKER = "redis-server"


class RedisMissing(RuntimeError):
    pass


def redis_binary() -> str:
    """Return the path of redis-server, or raise RedisMissing saying how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        raise RedisMissing(INSTALL_HINT)
    return found


def start(directory: Path, *, port: int, log_file: Path, cluster_port: int | None = None) -> int:
    """Start redis-server on 127.0.0.1:`port` with `directory` as its working folder;
    return its pid. With `cluster_port`, as a node of a Redis Cluster whose bus listens
    there (Redis's default, port + 10000, is past 65535 for high ports)."""
    directory.mkdir(parents=True, exist_ok=True)
    cluster = []
    if cluster_port is not None:
        cluster = [
            "--cluster-enabled", "yes",
            "--cluster-port", str(cluster_port),
            "--cluster-config-file", "nodes.conf",
        ]  # fmt: skip
    command = [
        redis_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory.resolve()),
        # A cache and a store of short-lived keys: nothing worth an fsync.
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--protected-mode", "yes",
        *cluster,
    ]  # fmt: skip
    return processes.spawn(command, env=os.environ, log_file=log_file)


def create_cluster(ports: Sequence[int], *, timeout: float = 60) -> None:
    """Make the nodes on `ports` (started with `cluster_port`) one Redis Cluster, every one
    a master, and wait until each says `cluster_state:ok`; raise RuntimeError otherwise."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RedisMissing(
            "redis-cli is not installed (Debian/Ubuntu: `sudo apt-get install redis-tools`)"
        )
    created = subprocess.run(
        [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports),
         "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if created.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
    deadline = time.monotonic() + timeout
    for port in ports:
        while not cluster_is_ok(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster node on :{port} is not ok")
            time.sleep(0.1)


def cluster_is_ok(port: int) -> bool:
    """Say whether the Redis Cluster node on 127.0.0.1:`port` serves every slot."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False


def is_up(port: int) -> bool:
    """Say whether a Redis on 127.0.0.1:`port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop(pid: int, *, timeout: float = 10) -> None:
    """Stop redis-server (SIGTERM), by force after `timeout`."""
    processes.stop_group(pid, marker=MARKER, first=signal.SIGTERM, timeout=timeout)
