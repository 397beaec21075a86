"""The cluster's Redis: a redis-server of its own, on loopback, keeping nothing on disk."""

from __future__ import annotations

import os
import shutil
import signal
import socket
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


def start(directory: Path, *, port: int, log_file: Path) -> int:
    """Start redis-server on 127.0.0.1:`port` with `directory` as its working folder;
    return its pid."""
    directory.mkdir(parents=True, exist_ok=True)
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
    ]  # fmt: skip
    return processes.spawn(command, env=os.environ, log_file=log_file)


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
